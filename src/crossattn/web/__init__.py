"""``crossattn serve``: a local Gradio page that samples an image and shows its attention maps.

``session`` samples one traced image and writes the files ``crossattn generate --maps`` writes (or
reads an uploaded image and writes ``crossattn maps --image``'s); ``edits`` is the edit box
(``crossattn edit``, with or without ``--image``); ``render`` turns maps into pictures; ``handlers``
are the Gradio request functions (``/generate`` and ``/edit`` are also API endpoints); ``app`` lays
the page out and launches it. Gradio is imported only here, so ``crossattn --help`` and the library
never load it.

May import: the library (``crossattn.sampling``, ``models``, ``attention``, ``editing``, ``config``,
``viz``); never the command line's sub-command modules, argparse, or training
(``tests/test_import_graph.py``).
"""
