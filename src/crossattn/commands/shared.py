"""What the sampling commands (``generate``, ``maps``, ``eval``) share: loading the pipeline quietly,
the image sidecar, atomic image and maps writing. Kept here so those command modules import this
one and never each other."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from ..config import SCHEDULER_NAMES


@dataclass
class ImageJob:
    """One image to write: its prompt, index within the prompt, seed and paths."""

    prompt: str
    index: int
    seed: int
    png: Path
    sidecar: Path
    upscaled: Path | None


def check_scheduler(name: str | None) -> None:
    if name is not None and name not in SCHEDULER_NAMES:
        raise ValueError(f"unknown scheduler {name!r}; choices: {', '.join(SCHEDULER_NAMES)}")


def set_threads(threads: int | None) -> None:
    """``--threads N``: torch's CPU threads (on a shared CPU, fewer threads than cores is often faster)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def load_for_command(args: argparse.Namespace, prompts: list[str]):
    """The pipeline a sampling command asked for (``--model``, ``--lora``, ``--scheduler``,
    ``--device``, ``--threads``), loaded without loading bars; the sampling bar is kept unless
    ``--quiet``. Warns, naming them, about prompt words the model never saw in training."""
    from ..loading import load_pipeline
    from ..vocabulary import model_vocabulary, warn_unknown_words

    set_threads(getattr(args, "threads", None))
    warn_unknown_words(prompts, model_vocabulary(args.model, args.lora))
    pipe = load_pipeline(args.model, scheduler=args.scheduler, device=args.device, lora=args.lora)
    if getattr(args, "quiet", False):
        pipe.set_progress_bar_config(disable=True)
    return pipe


def scheduler_name(pipe) -> str:
    """Our short name for the pipeline's scheduler class, or the class name."""
    from ..model import scheduler_class

    cls = type(pipe.scheduler)
    return next((n for n in SCHEDULER_NAMES if scheduler_class(n) is cls), cls.__name__)


def sidecar(job: ImageJob, args: argparse.Namespace, scheduler: str, model: dict, size: tuple[int, int]) -> dict:
    """The JSON written beside every image: what made it, enough to make it again."""
    from .. import __version__

    return {
        "prompt": job.prompt,
        "negative_prompt": args.negative or "",
        "seed": args.seed,
        "index": job.index,
        "image_seed": job.seed,
        "steps": args.steps,
        "guidance_scale": args.guidance,
        "relation_guidance": args.relation_guidance,
        "scheduler": scheduler,
        "width": size[0],
        "height": size[1],
        "model": model,
        "version": __version__,
        "file": job.png.name,
    }


def relation_fields(pipe, prompt: str, scale: float) -> dict:
    """Sidecar fields saying whether relation guidance steered ``prompt`` and, when the prompt names
    a relation the guidance could not read, why (the pipeline also warns); none for other pipelines."""
    from ..pipeline import CrossAttnPipeline
    from ..relation_guidance import relation_note

    if not isinstance(pipe, CrossAttnPipeline):
        return {}
    return relation_note(prompt, pipe.tokenizer, pipe.max_length, scale)


def write_image(job: ImageJob, image, meta: dict) -> list[Path]:
    """Write the PNG, the optional upscaled copy and the sidecar, each atomically."""
    from PIL import Image

    from ..files import atomic_write, atomic_write_json

    written = [atomic_write(job.png, lambda tmp: image.save(tmp, format="PNG"))]
    if job.upscaled is not None:
        k = int(job.upscaled.suffixes[-2][2:])
        big = image.resize((image.width * k, image.height * k), Image.NEAREST)
        written.append(atomic_write(job.upscaled, lambda tmp: big.save(tmp, format="PNG")))
    written.append(atomic_write_json(job.sidecar, meta))
    return written


def maps_paths(png: Path) -> list[Path]:
    """``x.png`` → ``x.maps.safetensors``, ``x.maps.json``, ``x.maps.png``."""
    return [png.with_suffix(suffix) for suffix in (".maps.safetensors", ".maps.json", ".maps.png")]


def write_maps(maps, image, png: Path, sampling: dict, words=None) -> list[Path]:
    """Save one image's maps (tensors + JSON) and its word-overlay row beside ``png``."""
    from .. import viz

    maps.meta["sampling"] = sampling
    tensors, meta = maps.save(png.with_suffix(".maps.safetensors"))
    row = viz.save_figure(viz.word_row(maps, [image], words=words), png.with_suffix(".maps.png"))
    return [tensors, meta, row]


def check_unet(pipe) -> None:
    """Maps need a ``UNet2DConditionModel`` denoiser; say so for any other pipeline."""
    from diffusers import UNet2DConditionModel

    unet = getattr(pipe, "unet", None)
    if not isinstance(unet, UNet2DConditionModel):
        found = type(unet).__name__ if unet is not None else "no unet"
        raise ValueError(f"{type(pipe).__name__} has {found}; attention maps need a UNet2DConditionModel denoiser")
