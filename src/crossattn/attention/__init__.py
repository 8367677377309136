"""Attention capture: processors installed through ``set_attn_processor`` and undone on exit.

- :mod:`.processor` computes ``softmax(QKᵀ/√d)`` where it records; :mod:`.store` keeps running sums
  (memory flat in the number of steps); :mod:`.trace` is the ``Tracer`` context manager and
  :mod:`.maps` the ``AttentionMaps`` it returns (per word, layer, head, step; HTML in :mod:`.html`).
- :mod:`.install` is the one install / restore lifecycle the tracer and :mod:`crossattn.editing`'s
  attention control share; :mod:`.record` the in-graph capture the grounding loss trains through.

May import: ``crossattn.config``, ``crossattn.files``, ``crossattn.viz``; never models, data, training,
editing, sampling, evaluation, commands or web (``tests/test_import_graph.py`` checks it).
"""
