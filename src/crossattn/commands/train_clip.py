"""``crossattn train-clip``: the mini-CLIP on procedural scenes with hard negatives (:mod:`crossattn.clip_training`).

Defaults come from :func:`crossattn.clip_training.clip_training_defaults` and :class:`ClipConfig`; on
``--resume`` the run's saved ``config.json`` is the base and flags given still win (named in a warning),
as for ``crossattn train``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import warnings
from pathlib import Path

from .train import flag_overrides

CLIP_FLAGS = ("negatives",)  # flags that set a ClipConfig field


def build_configs(args: argparse.Namespace):
    """``(ClipConfig, TrainingConfig)``: defaults (or the resumed run's), then the flags given."""
    from ..clip_model import ClipConfig
    from ..clip_training import clip_training_defaults
    from ..config import TrainingConfig

    if args.resume:
        path = Path(args.out) / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"--resume: {args.out} holds no run (no config.json); start without --resume")
        saved = json.loads(path.read_text(encoding="utf-8"))
        clip, training = ClipConfig.from_dict(saved["model"]), TrainingConfig.from_dict(saved["training"])
    else:
        clip, training = ClipConfig(), clip_training_defaults()
    train_flags = {k: v for k, v in flag_overrides(args, TrainingConfig).items() if k not in CLIP_FLAGS}
    clip_flags = {k: getattr(args, k) for k in CLIP_FLAGS if getattr(args, k, None) is not None}
    if args.resume:
        changed = [f"{k} {getattr(training, k)} -> {v}" for k, v in train_flags.items() if getattr(training, k) != v]
        changed += [f"{k} {getattr(clip, k)} -> {v}" for k, v in clip_flags.items() if getattr(clip, k) != v]
        if changed:
            warnings.warn(f"resuming with changed settings: {', '.join(changed)}", stacklevel=2)
    return dataclasses.replace(clip, **clip_flags), dataclasses.replace(training, **train_flags)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..clip_training import train_clip

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.resume and args.overwrite:
        raise ValueError("--resume and --overwrite contradict each other; pass one")
    clip, training = build_configs(args)
    result = train_clip(
        clip, training, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress
    )
    if result.final is not None:
        print(result.final, flush=True)
    return 0
