"""``crossattn generate``: prompts → PNG images with JSON sidecars in an output folder.

Every file name is decided, and checked against existing files, before anything is sampled, so a
refusal to overwrite loses no work. Images of all prompts are sampled together, ``--batch-size`` at
a time; each has its own generator (seed + index), so batching does not change which noise an
image starts from. Files are written atomically.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .shared import ImageJob

#: ``--batch-size`` default: images sampled together. On CPU throughput grows with the batch up to
#: about this size at 32×32 (benchmarks/generate_throughput.py); memory stays far below 1 GB.
DEFAULT_BATCH_SIZE = 16


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


def unique_slugs(prompts: list[str]) -> dict[str, str]:
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


def plan_jobs(args: argparse.Namespace, prompts: list[str]) -> list[ImageJob]:
    """Name every output file: ``DIR/<slug>-<seed>-<i>.png`` (+ ``.json``, + ``.x<K>.png``).

    A prompt listed again gets the next ``--num-images`` images (next index i, seed + i), as if its
    ``--num-images`` were larger.
    """
    out = Path(args.out)
    slugs = unique_slugs(prompts)
    planned: dict[str, int] = {}  # prompt → images planned so far
    jobs = []
    for prompt in prompts:
        first = planned.get(prompt, 0)
        for i in range(first, first + args.num_images):
            stem = out / f"{slugs[prompt]}-{args.seed}-{i}"
            upscaled = stem.with_name(f"{stem.name}.x{args.upscale}.png") if args.upscale else None
            jobs.append(
                ImageJob(prompt, i, args.seed + i, stem.with_suffix(".png"), stem.with_suffix(".json"), upscaled)
            )
        planned[prompt] = first + args.num_images
    return jobs


def run(args: argparse.Namespace) -> int:
    from ..files import refuse_overwrite
    from ..loading import check_lora_folder, check_model_folder, model_identity
    from .shared import check_scheduler, check_unet, load_for_command, maps_paths, scheduler_name

    check_scheduler(args.scheduler)
    prompts = read_prompts(args)
    if args.model is not None:
        check_model_folder(args.model)
    if args.lora is not None:
        check_lora_folder(args.lora)
    jobs = plan_jobs(args, prompts)
    maps_files = [p for j in jobs for p in maps_paths(j.png)] if args.maps else []
    refuse_overwrite(
        [p for j in jobs for p in (j.png, j.sidecar, j.upscaled) if p is not None] + maps_files, args.overwrite
    )

    pipe = load_for_command(args, prompts)
    if args.maps:
        check_unet(pipe)
    model, scheduler = model_identity(args.model, args.lora), scheduler_name(pipe)
    size = args.batch_size or DEFAULT_BATCH_SIZE
    for start in range(0, len(jobs), size):
        for path in sample_and_write(pipe, jobs[start : start + size], args, model, scheduler):
            print(path, flush=True)
    return 0


def sample_and_write(pipe, jobs: list[ImageJob], args: argparse.Namespace, model: dict, scheduler: str) -> list[Path]:
    """Sample one batch of images and write each with its sidecar (and maps); returns the paths written."""
    from .shared import relation_fields, sidecar, write_image, write_maps

    images, maps = sample(pipe, jobs, args)
    written = []
    for i, (job, image) in enumerate(zip(jobs, images, strict=True)):
        meta = sidecar(job, args, scheduler, model, image.size)
        meta.update(relation_fields(pipe, job.prompt, args.relation_guidance))
        written += write_image(job, image, meta)
        if maps is not None:
            written += write_maps(maps.subset([i]), image, job.png, meta)
    return written


def sample(pipe, jobs: list[ImageJob], args: argparse.Namespace):
    """The images of ``jobs`` (any prompts) in one batch; each image has its own generator seeded
    ``job.seed``, so an image is the one it would be alone or with other prompts.

    With ``--maps`` the batch is sampled inside a cross-attention trace; returns (images, maps or None).
    """
    import contextlib

    import torch

    from ..attention.trace import trace

    generators = [torch.Generator(device="cpu").manual_seed(j.seed) for j in jobs]
    with trace(pipe) if args.maps else contextlib.nullcontext() as tracer:
        images = pipe(
            [j.prompt for j in jobs],
            negative_prompt=args.negative,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            relation_guidance=args.relation_guidance,
            generator=generators,
        ).images
    return images, tracer.maps() if tracer is not None else None
