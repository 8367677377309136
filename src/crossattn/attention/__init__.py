"""Attention capture and control: processors installed through ``set_attn_processor`` and undone on exit.

- :mod:`.processor` computes ``softmax(QKᵀ/√d)`` where it records; :mod:`.store` keeps running sums
  (memory flat in the number of steps); :mod:`.trace` is the ``Tracer`` context manager and
  :mod:`.maps` the ``AttentionMaps`` it returns (per word, layer, head, step; HTML in :mod:`.html`).
- :mod:`.control` is prompt-to-prompt attention control; :mod:`.install` the one install / restore
  lifecycle both share; :mod:`.record` the in-graph capture the grounding loss trains through.

May import: ``crossattn.config``, ``crossattn.files``, ``crossattn.viz``; never models, data, training,
steering, sampling, evaluation, commands or web (``tests/test_import_graph.py`` checks it).
"""
