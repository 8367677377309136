"""``crossattn serve``: a local Gradio page that samples an image and shows its attention maps.

``session`` samples one traced image and writes the files ``crossattn generate --maps`` writes;
``render`` turns maps into pictures; ``handlers`` are the Gradio request functions (``/generate``
is also an API endpoint); ``app`` lays the page out and launches it. Gradio is imported only
here, so ``crossattn --help`` and the library never load it.

May import: the library (``crossattn.sampling``, ``models``, ``attention``, ``config``, ``viz``); never
the command line's sub-command modules, argparse, or training (``tests/test_import_graph.py``).
"""
