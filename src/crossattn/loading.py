"""Find and load a pipeline: the shipped default model, or any diffusers folder by path."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from .config import ModelConfig

PRETRAINED_DIR = Path(__file__).parent / "pretrained"
PLACEHOLDER = "untrained-placeholder"


def default_model_dir() -> Path:
    """Where the default model ships: ``crossattn/pretrained`` inside the package."""
    return PRETRAINED_DIR


def has_default_model() -> bool:
    return (PRETRAINED_DIR / "model_index.json").is_file()


def check_model_folder(path: str | Path) -> Path:
    """The folder, if it is a diffusers pipeline folder; else a clear error."""
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"model folder {folder} does not exist")
    if not (folder / "model_index.json").is_file():
        raise ValueError(
            f"{folder} is not a diffusers pipeline folder (no model_index.json); "
            "expected a folder written by save_pretrained, e.g. RUN/final"
        )
    return folder


def load_pipeline(
    path: str | Path | None = None,
    scheduler: str | None = None,
    device: str | None = None,
    lora: str | Path | None = None,
):
    """Load a pipeline folder, or the default model when ``path`` is None.

    A ``CrossAttnPipeline`` folder loads as one; any other diffusers text-to-image folder
    (e.g. a Stable Diffusion download) loads through ``DiffusionPipeline``. Weights come from
    safetensors only. Until a trained default model ships, ``path=None`` gives an untrained,
    reproducibly initialised placeholder of the default config (with a warning). ``lora``: a LoRA
    folder (``crossattn finetune`` output, diffusers layout) loaded on top.
    """
    import torch

    if path is None and not has_default_model():
        warnings.warn("no trained default model is shipped yet; using an untrained placeholder", stacklevel=2)
        pipe = placeholder_pipeline()
    else:
        folder = check_model_folder(path if path is not None else PRETRAINED_DIR)
        pipe = pipeline_class(folder).from_pretrained(folder, use_safetensors=True)
        pipe.to(torch.float32)  # weights ship in fp16; sample in fp32 (CPU has no fast fp16)
    if lora is not None:
        from .lora import load_lora

        load_lora(pipe, lora)
    if scheduler is not None:
        set_scheduler(pipe, scheduler)
    if device is not None:
        pipe.to(device)
    pipe.set_progress_bar_config(leave=False)
    return pipe


def pipeline_class(folder: Path):
    """``CrossAttnPipeline`` for our folders, ``DiffusionPipeline`` (auto class) for others."""
    from diffusers import DiffusionPipeline

    from .pipeline import CrossAttnPipeline

    name = json.loads((folder / "model_index.json").read_text()).get("_class_name")
    return CrossAttnPipeline if name == CrossAttnPipeline.__name__ else DiffusionPipeline


def set_scheduler(pipe, name: str) -> None:
    """Swap the sampler by name on any diffusers pipeline, keeping its noise schedule."""
    from .model import make_scheduler

    pipe.scheduler = make_scheduler(name, dict(pipe.scheduler.config))


def placeholder_pipeline(config: ModelConfig | None = None, seed: int = 0):
    """The default config, randomly but reproducibly initialised, with the shipped tokenizer;
    in eval mode, as ``from_pretrained`` leaves a loaded pipeline."""
    from .model import build_components
    from .pipeline import CrossAttnPipeline

    pipe = CrossAttnPipeline(**build_components(config or ModelConfig(), seed=seed))
    pipe.unet.eval()
    pipe.text_encoder.eval()
    return pipe


def model_identity(path: str | Path | None, lora: str | Path | None = None) -> dict:
    """``{"path", "hash"}`` for a sidecar: the folder's content hash, or the placeholder's name;
    with a LoRA, also ``"lora": {"path", "hash"}``."""
    from .files import folder_hash

    if path is None and not has_default_model():
        identity: dict = {"path": PLACEHOLDER, "hash": PLACEHOLDER}
    else:
        folder = Path(path) if path is not None else PRETRAINED_DIR
        identity = {"path": str(folder), "hash": folder_hash(folder)}
    if lora is not None:
        identity["lora"] = {"path": str(lora), "hash": folder_hash(lora)}
    return identity
