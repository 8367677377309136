"""The model part: the denoiser and its text encoder, the pipeline around them, and how folders load.

- :mod:`.model` builds the pixel-space ``UNet2DConditionModel`` + ``CLIPTextModel`` from a
  ``ModelConfig`` and names the schedulers; :mod:`.clip_model` is the mini-CLIP (both towers).
- :mod:`.pipeline` is ``CrossAttnPipeline`` (classifier-free guidance); :mod:`.relation_guidance` is part
  of how it samples: it steers ``A left of B`` prompts on their cross-attention maps so the relation holds.
- :mod:`.loading` loads any diffusers folder (the shipped default model in ``pretrained/``, a run's
  ``final/``, a LoRA on top: :mod:`.lora_files` names its files and loads them); :mod:`.tokenizer` and
  :mod:`.vocabulary` handle the CLIP BPE and the words a model was trained on.

May import: ``crossattn.config``, ``crossattn.files``, ``crossattn.data`` (the caption grammar, for
the vocabulary), ``crossattn.attention`` (relation guidance reads the cross-attention maps); never
editing, training, sampling, evaluation, commands or web (``tests/test_import_graph.py`` checks it).
"""

from pathlib import Path

#: The shipped default model: a diffusers pipeline folder, its tokenizer and the mini-CLIP (``clip/``).
PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
