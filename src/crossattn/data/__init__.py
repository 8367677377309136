"""Datasets: procedural scenes with exact masks, and user image folders.

- :mod:`.shapes` draws one- and two-object scenes with a mask per object (training data and the
  evaluation's ground truth); :mod:`.captions` is their grammar, :mod:`.negatives` the mini-CLIP's
  hard negatives, :mod:`.digits` a real-data example.
- :mod:`.folder` reads an imagefolder with ``metadata.jsonl`` (``file_name``, ``text``), as diffusers'
  text-to-image examples do.

May import: ``crossattn.files`` only (``tests/test_import_graph.py`` checks it).
"""
