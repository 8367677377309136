"""``crossattn generate``: prompts → PNG images with JSON sidecars in an output folder.

An argparse adapter: the flags become a :class:`~crossattn.sampling.SamplingRequest` and
:func:`crossattn.sampling.run` does the job. Every file name is decided, and checked against existing
files, before anything is sampled, so a refusal to overwrite loses no work. Images of all prompts are
sampled together, ``--batch-size`` at a time; each has its own generator (seed + index), so batching
does not change which noise an image starts from. Files are written atomically.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import BadArgument, MissingFile
from .flags import (
    add_device_flags,
    add_lora_flag,
    add_model_flag,
    add_negative_flag,
    add_out_flag,
    add_overwrite_flag,
    add_relation_guidance_flag,
    add_sampler_flags,
    add_seed_flag,
    add_size_flags,
    positive_int,
)


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("generate", help="generate images from prompts", description="Generate images from prompts.")
    p.add_argument("prompt", nargs="*", help="one or more prompts (quote each)")
    p.add_argument("--prompts-file", metavar="F", help="a text file with one prompt per line")
    add_model_flag(p)
    add_lora_flag(p)
    add_relation_guidance_flag(p)
    add_seed_flag(p, "seed of the first image; image i uses seed+i (default: %(default)s)")
    add_sampler_flags(p, "classifier-free guidance scale; 1 = unguided (default: %(default)s)")
    add_negative_flag(p)
    p.add_argument("--num-images", type=positive_int, default=1, help="images per prompt (default: %(default)s)")
    add_out_flag(p)
    p.add_argument("--upscale", type=positive_int, metavar="K", help="also write a K× nearest-neighbour upscaled copy")
    add_overwrite_flag(p)
    p.add_argument("--maps", action="store_true", help="also write <name>.maps.safetensors/.json and <name>.maps.png")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        metavar="N",
        help="images sampled together, across prompts; the same images as one at a time (default: 16)",
    )
    add_size_flags(p)
    add_device_flags(p)
    return p


def read_prompts(args: argparse.Namespace) -> list[str]:
    """The positional prompts, then those of ``--prompts-file`` (one a line, blank lines skipped)."""
    prompts = list(args.prompt)
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise MissingFile(f"prompts file {path} does not exist; give a text file with one prompt per line")
        prompts += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise BadArgument("no prompt given; pass one or more prompts or --prompts-file F")
    return prompts


def run(args: argparse.Namespace) -> int:
    from ..sampling import MapsOptions
    from ..sampling import run as run_job
    from .shared import model_from_args, request_from_args, set_threads

    request = request_from_args(args, read_prompts(args), maps=MapsOptions() if args.maps else None)
    model = model_from_args(args)
    set_threads(args.threads)
    run_job(request, model, quiet=args.quiet, on_written=lambda path: print(path, flush=True))
    return 0
