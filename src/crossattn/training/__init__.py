"""The training part: one accelerate loop for training from scratch, fine-tuning and the mini-CLIP.

- :mod:`.train` is the loop (:func:`~crossattn.training.train.train`); :mod:`.train_setup`,
  :mod:`.train_outputs`, :mod:`.batching`, :mod:`.checkpoint_state` and :mod:`.runs` are its
  start, its outputs (checkpoints, samples, snapshots, ``final/``), its data order and its run folder.
- :mod:`.losses` and :mod:`.grounding_loss` are the objective; :mod:`.probes` a cheap progress signal.
- :mod:`.clip_training` swaps the objective for the mini-CLIP; :mod:`.lora` and :mod:`.prior` are
  fine-tuning's adapters and prior images; :mod:`.recipes` the named presets (``--recipe speedrun``).

May import: ``crossattn.config``, ``crossattn.files``, ``crossattn.models``, ``crossattn.data``,
``crossattn.attention`` (the grounding loss records attention) and ``crossattn.evaluation`` (the
mini-CLIP's held-out probe); never editing, sampling, commands or web (``tests/test_import_graph.py``).
"""
