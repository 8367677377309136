"""``crossattn generate``: prompts → PNG images with JSON sidecars in an output folder.

Every file name is decided, and checked against existing files, before anything is sampled, so a
refusal to overwrite loses no work. Files are written atomically.
"""

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


def read_prompts(args: argparse.Namespace) -> list[str]:
    prompts = list(args.prompt)
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise FileNotFoundError(f"prompts file {path} does not exist")
        prompts += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ValueError("no prompt given; pass one or more prompts or --prompts-file F")
    return prompts


def plan_jobs(args: argparse.Namespace, prompts: list[str]) -> list[ImageJob]:
    """Name every output file: ``DIR/<slug>-<seed>-<i>.png`` (+ ``.json``, + ``.x<K>.png``)."""
    from ..files import slugify

    out = Path(args.out)
    jobs = []
    for prompt in prompts:
        for i in range(args.num_images):
            stem = out / f"{slugify(prompt)}-{args.seed}-{i}"
            upscaled = stem.with_name(f"{stem.name}.x{args.upscale}.png") if args.upscale else None
            jobs.append(
                ImageJob(prompt, i, args.seed + i, stem.with_suffix(".png"), stem.with_suffix(".json"), upscaled)
            )
    names = [j.png for j in jobs]
    if len(set(names)) != len(names):
        raise ValueError("two prompts give the same file name; make the prompts differ in letters or digits")
    return jobs


def sidecar(job: ImageJob, args: argparse.Namespace, scheduler: str, model: dict, size: tuple[int, int]) -> dict:
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


def scheduler_name(pipe) -> str:
    """Our short name for the pipeline's scheduler class, or the class name."""
    from ..model import scheduler_class

    cls = type(pipe.scheduler)
    return next((n for n in SCHEDULER_NAMES if scheduler_class(n) is cls), cls.__name__)


def run(args: argparse.Namespace) -> int:
    from ..files import refuse_overwrite
    from ..loading import check_model_folder, load_pipeline, model_identity
    from .maps import check_unet, maps_paths, write_maps

    if args.scheduler is not None and args.scheduler not in SCHEDULER_NAMES:
        raise ValueError(f"unknown scheduler {args.scheduler!r}; choices: {', '.join(SCHEDULER_NAMES)}")
    prompts = read_prompts(args)
    if args.model is not None:
        check_model_folder(args.model)
    jobs = plan_jobs(args, prompts)
    maps_files = [p for j in jobs for p in maps_paths(j.png)] if args.maps else []
    refuse_overwrite(
        [p for j in jobs for p in (j.png, j.sidecar, j.upscaled) if p is not None] + maps_files, args.overwrite
    )

    pipe = load_pipeline(args.model, scheduler=args.scheduler, device=args.device, lora=args.lora)
    if args.maps:
        check_unet(pipe)
    model = model_identity(args.model, args.lora)
    for prompt in prompts:
        own = [j for j in jobs if j.prompt == prompt]
        images, maps = sample(pipe, prompt, own, args)
        for i, (job, image) in enumerate(zip(own, images, strict=True)):
            meta = sidecar(job, args, scheduler_name(pipe), model, image.size)
            written = write_image(job, image, meta)
            if maps is not None:
                written += write_maps(maps.subset([i]), image, job.png, meta)
            for path in written:
                print(path, flush=True)
    return 0


def sample(pipe, prompt: str, jobs: list[ImageJob], args: argparse.Namespace):
    """All images of one prompt in one batch; image i has its own generator seeded ``seed + i``.

    With ``--maps`` the batch is sampled inside a cross-attention trace; returns (images, maps or None).
    """
    import contextlib

    import torch

    from ..attention.trace import trace

    generators = [torch.Generator(device="cpu").manual_seed(j.seed) for j in jobs]
    with trace(pipe) if args.maps else contextlib.nullcontext() as tracer:
        images = pipe(
            prompt,
            negative_prompt=args.negative,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            relation_guidance=args.relation_guidance,
            num_images_per_prompt=len(jobs),
            generator=generators,
        ).images
    return images, tracer.maps() if tracer is not None else None
