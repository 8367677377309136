"""The command line's sub-commands: one module per command, each ``run(args) -> int``.

Thin adapters: each turns its argparse flags into the library's typed settings (a
:class:`~crossattn.sampling.SamplingRequest`, a ``TrainingConfig``, ``EditSettings``) and calls the
library. Imported lazily by ``cli.py``, so ``crossattn --help`` loads none of them.

May import anything in the package; nothing in the package imports them (``tests/test_import_graph.py``).
"""
