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


def read_prompts(args: argparse.Namespace) -> list[str]:
    """The positional prompts, then those of ``--prompts-file`` (one a line, blank lines skipped)."""
    prompts = list(args.prompt)
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise FileNotFoundError(f"prompts file {path} does not exist")
        prompts += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ValueError("no prompt given; pass one or more prompts or --prompts-file F")
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
