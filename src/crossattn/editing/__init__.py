"""The editing part: change an image through its words with prompt-to-prompt attention control.

- :mod:`.prompt_edit` is ``crossattn.edit``: source, target and the target left alone (``.plain``) sampled
  from one noise, the target under control (Hertz et al., "Prompt-to-Prompt Image Editing with
  Cross-Attention Control", ICLR 2023).
- :mod:`.image_edit` is ``crossattn.edit_image`` / ``crossattn.invert_image``: the same edit of an image the
  model did not draw, inverted to its noise first (DDIM or null-text; Direct Inversion pins the source row).
- :mod:`.control` is ``crossattn.control``, the ``Controller``: the attention processors that give the target
  the source's maps, installed and restored like the tracer; its pieces are :mod:`.token_alignment` (which
  source tokens a target token reads), :mod:`.local_blend` (the latents kept the source's outside the
  changed words' region) and :mod:`.shared_rows` (the target rows dropped from the U-Net while they follow
  the source).
- :mod:`.job` is the edit job every front end runs (``crossattn edit``, the explorer's edit box): the
  inversion, the edit inside one trace, and the files it writes.
- :mod:`.image_tuning` fits a small LoRA on a given image before its edit (``tune_steps``, opt-in).
- :mod:`.settings` is ``EditSettings``, every knob of an edit in one checked object (torch-free: the CLI's
  parser reads its defaults).

Nothing is imported here, so ``crossattn edit --help`` loads no torch.

May import: ``crossattn.config``, ``crossattn.errors``, ``crossattn.attention`` (the install / restore
lifecycle, the capture processors), ``crossattn.models`` (pipeline arguments) and ``crossattn.sampling``
(a given image's inversion) and ``crossattn.training`` (per-image tuning fits with fine-tuning's LoRA targets
and diffusion loss: :mod:`.image_tuning`; training never imports editing); never evaluation, data, commands or
web (``tests/test_import_graph.py`` checks it). The front ends are ``crossattn.commands.edit`` and
``crossattn.web.edits``.
"""
