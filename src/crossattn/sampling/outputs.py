"""The files of a sampling job: their names (decided before anything samples), the JSON sidecar
beside every image, and atomic writers for images and maps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import SCHEDULER_NAMES
from .request import SamplingRequest


@dataclass(frozen=True)
class ImageJob:
    """One image to write: its prompt, index within the prompt, seed and paths."""

    prompt: str
    index: int
    seed: int
    png: Path
    sidecar: Path
    upscaled: Path | None


def unique_slugs(prompts: list[str] | tuple[str, ...]) -> dict[str, str]:
    """A distinct file-name slug per distinct prompt: a prompt whose slug an earlier, different prompt
    already has (``"a red circle"`` and ``"A red circle!"``) gets ``-2``, ``-3``, ... appended."""
    from ..files import slugify

    slugs: dict[str, str] = {}
    for prompt in dict.fromkeys(prompts):
        base = slug = slugify(prompt)
        n = 2
        while slug in slugs.values():
            slug, n = f"{base}-{n}", n + 1
        slugs[prompt] = slug
    return slugs


def plan(request: SamplingRequest) -> list[ImageJob]:
    """Name every image of ``request``: ``OUT/<slug>-<seed>-<i>.png`` (+ ``.json``, + ``.x<K>.png``).

    A prompt listed again gets the next ``num_images`` images (next index i, seed + i), as if its
    ``num_images`` were larger.
    """
    if not request.prompts:
        raise ValueError("no prompt given; pass one or more prompts or --prompts-file F")
    slugs = unique_slugs(request.prompts)
    planned: dict[str, int] = {}  # prompt → images planned so far
    jobs = []
    for prompt in request.prompts:
        first = planned.get(prompt, 0)
        for i in range(first, first + request.num_images):
            stem = request.out / f"{slugs[prompt]}-{request.seed}-{i}"
            k = request.upscale
            upscaled = stem.with_name(f"{stem.name}.x{k}.png") if k else None
            jobs.append(
                ImageJob(prompt, i, request.seed + i, stem.with_suffix(".png"), stem.with_suffix(".json"), upscaled)
            )
        planned[prompt] = first + request.num_images
    return jobs


def planned_files(request: SamplingRequest, jobs: list[ImageJob]) -> list[Path]:
    """Every file the jobs will write (images, upscaled copies, sidecars, and maps when asked)."""
    files = [p for j in jobs for p in (j.png, j.sidecar, j.upscaled) if p is not None]
    return files + ([p for j in jobs for p in maps_paths(j.png)] if request.maps is not None else [])


def scheduler_name(pipe) -> str:
    """Our short name for the pipeline's scheduler class, or the class name."""
    from ..models.model import scheduler_class

    cls = type(pipe.scheduler)
    return next((n for n in SCHEDULER_NAMES if scheduler_class(n) is cls), cls.__name__)


def sidecar(
    job: ImageJob, request: SamplingRequest, scheduler: str, model: dict[str, Any], size: tuple[int, int]
) -> dict[str, Any]:
    """The JSON written beside every image: what made it, enough to make it again."""
    from .. import __version__

    return {
        "prompt": job.prompt,
        "negative_prompt": request.negative_prompt or "",
        "seed": request.seed,
        "index": job.index,
        "image_seed": job.seed,
        "steps": request.steps,
        "guidance_scale": request.guidance,
        "relation_guidance": request.relation_guidance,
        "scheduler": scheduler,
        "width": size[0],
        "height": size[1],
        "model": model,
        "version": __version__,
        "file": job.png.name,
    }


def relation_fields(pipe, prompt: str, scale: float) -> dict[str, Any]:
    """Sidecar fields saying whether relation guidance steered ``prompt`` and, when the prompt names
    a relation the guidance could not read, why (the pipeline also warns); none for other pipelines."""
    from ..models.pipeline import CrossAttnPipeline
    from ..models.relation_guidance import relation_note

    if not isinstance(pipe, CrossAttnPipeline):
        return {}
    return relation_note(prompt, pipe.tokenizer, pipe.max_length, scale)


def write_image(job: ImageJob, image, meta: dict[str, Any]) -> list[Path]:
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


def write_maps(maps, image, png: Path, sampling: dict[str, Any], words=None) -> list[Path]:
    """Save one image's maps (tensors + JSON) and its word-overlay row beside ``png``."""
    from .. import viz

    maps.meta["sampling"] = sampling
    tensors, meta = maps.save(png.with_suffix(".maps.safetensors"))
    row = viz.save_figure(viz.word_row(maps, [image], words=words), png.with_suffix(".maps.png"))
    return [tensors, meta, row]
