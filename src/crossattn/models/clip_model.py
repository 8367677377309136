"""The mini-CLIP: a ``transformers.CLIPModel`` for 32×32 scenes, and its transformers folder.

The text tower has exactly the shape of the pipeline's text encoder (:class:`~crossattn.config.ModelConfig`:
3 layers, width 128, 16 positions, the real 49,408-token BPE), so ``CLIPTextModel.from_pretrained``
of the CLIP folder *is* a text encoder the U-Net can read, as Stable Diffusion reads OpenAI's CLIP
(Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", 2021).
The vision tower is a small ViT over 4×4 patches. The folder::

    clip/config.json, model.safetensors     CLIPModel (text + vision towers + projections)
    clip/tokenizer.json, vocab.json, ...     the CLIP tokenizer (the same BPE files as the pipeline's)
    clip/preprocessor_config.json            CLIPImageProcessor: no resize or crop, x/255, mean 0.5, std 0.5
    clip/clip_config.json                    this module's ClipConfig (what trained it)

The image processor maps 0–255 pixels to [-1, 1] exactly as the scenes dataset does
(``x / 127.5 - 1``), so stock ``CLIPProcessor.from_pretrained(folder)`` prepares an image as training did.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import JsonConfig, ModelConfig
from . import PRETRAINED_DIR

PREPROCESS = {
    "do_resize": False,
    "do_center_crop": False,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "do_convert_rgb": True,
}


@dataclass
class ClipConfig(JsonConfig):
    """Shape of the mini-CLIP and what its training data looks like.

    Defaults follow ``shared/TRIALS.md`` run B: the text tower of :class:`ModelConfig`; a ViT with
    4×4 patches, width 128, 3 layers, 4 heads; projections to 128; two hard negatives per caption
    and a relation-heavy scene mix (:data:`crossattn.data.negatives.CLIP_KIND_MIX`).
    """

    image_size: int = 32
    patch_size: int = 4
    vision_hidden_size: int = 128
    vision_layers: int = 3
    vision_heads: int = 4
    projection_dim: int = 128
    text_hidden_size: int = ModelConfig.text_hidden_size
    text_layers: int = ModelConfig.text_layers
    text_heads: int = ModelConfig.text_heads
    text_max_length: int = ModelConfig.text_max_length
    negatives: int = 2  # hard negatives per caption in training
    kind_mix: tuple[float, ...] = (0.1, 0.2, 0.6, 0.1)  # one, one_position, two_relation, two_and

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}")
        for width, heads, name in (
            (self.vision_hidden_size, self.vision_heads, "vision"),
            (self.text_hidden_size, self.text_heads, "text"),
        ):
            if width % heads:
                raise ValueError(f"{name} width {width} is not divisible by its {heads} heads")
        if self.negatives < 1:
            raise ValueError(f"negatives must be at least 1 per caption, got {self.negatives}")

    def text_model_config(self) -> ModelConfig:
        """The pipeline-side view of the text tower (for ``build_text_encoder``'s config)."""
        return ModelConfig(
            text_hidden_size=self.text_hidden_size,
            text_layers=self.text_layers,
            text_heads=self.text_heads,
            text_max_length=self.text_max_length,
        )


def build_clip_model(cfg: ClipConfig, seed: int = 0):
    """A freshly initialised ``CLIPModel`` of shape ``cfg`` (reproducible from ``seed``)."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig

    from .model import text_encoder_config

    vision = CLIPVisionConfig(
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        hidden_size=cfg.vision_hidden_size,
        intermediate_size=4 * cfg.vision_hidden_size,
        num_hidden_layers=cfg.vision_layers,
        num_attention_heads=cfg.vision_heads,
    )
    text = text_encoder_config(cfg.text_model_config())
    config = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=cfg.projection_dim)
    torch.manual_seed(seed)
    return CLIPModel(config)


def image_processor():
    """The ``CLIPImageProcessor`` that reproduces the scenes' pixel values (see the module docstring).
    (Without torchvision transformers 5 falls back to its PIL backend, saying so: said once, at error level.)"""
    from transformers import CLIPImageProcessor

    from .model import transformers_errors_only

    with transformers_errors_only():
        return CLIPImageProcessor(**PREPROCESS)


def save_clip_folder(model, tokenizer, folder: str | Path, cfg: ClipConfig | None = None) -> Path:
    """Write ``model`` + ``tokenizer`` + the image processor as one transformers folder (safetensors)."""
    from transformers import CLIPProcessor

    from .tokenizer import copy_bpe_files

    folder = Path(folder)
    model.save_pretrained(folder, safe_serialization=True)
    processor = image_processor()
    CLIPProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(folder)
    processor.save_pretrained(folder)  # preprocessor_config.json, where stock loaders look for it
    copy_bpe_files(None, folder)
    if cfg is not None:
        cfg.save(folder / "clip_config.json")
    return folder


def default_clip_dir() -> Path:
    """The shipped mini-CLIP: ``crossattn/pretrained/clip``."""
    return PRETRAINED_DIR / "clip"


def load_clip(folder: str | Path | None = None):
    """``(CLIPModel, tokenizer)`` from a CLIP folder (default: the shipped one), eval mode, safetensors only."""
    import torch
    from transformers import CLIPModel

    from .loading import quiet_loading
    from .tokenizer import load_tokenizer

    path = Path(folder) if folder is not None else default_clip_dir()
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"no CLIPModel folder (config.json + model.safetensors) at {path}")
    with quiet_loading():
        model = CLIPModel.from_pretrained(path, use_safetensors=True, dtype=torch.float32).eval()  # fp16 on disk
    return model, load_tokenizer(path, max_length=model.config.text_config.max_position_embeddings)
