"""The steering part: changing what the model draws through its attention, at sampling time.

- :mod:`.editing` is ``edit()``: prompt-to-prompt (Hertz et al., 2022) over the attention control of
  :mod:`crossattn.attention.control`.

May import: ``crossattn.config``, ``crossattn.attention`` and ``crossattn.models.tokenizer`` (word
spans); never training, sampling, evaluation, commands or web (``tests/test_import_graph.py``).
"""
