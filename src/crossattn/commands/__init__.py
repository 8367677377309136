"""The command line's sub-commands: one module per command, each with ``add_parser(sub)`` (its
sub-command and flags) and ``run(args) -> int``; the flags several commands share are declared once
in :mod:`.flags`.

Thin adapters: each turns its argparse flags into the library's typed settings (a
:class:`~crossattn.sampling.SamplingRequest`, a ``TrainingConfig``, ``EditSettings``) and calls the
library. ``cli.py`` imports them all to build its parser, so at module level they import nothing heavy:
torch, diffusers and the library's work are imported inside ``run`` (``crossattn --help`` stays instant).

May import anything in the package; nothing in the package imports them (``tests/test_import_graph.py``).
"""
