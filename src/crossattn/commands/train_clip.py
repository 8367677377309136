"""``crossattn train-clip``: the mini-CLIP on procedural scenes with hard negatives (:mod:`crossattn.training.clip_training`).

Defaults come from :data:`crossattn.config.CLIP_TRAINING_DEFAULTS` and :class:`ClipConfig`; on
``--resume`` the run's saved ``config.json`` is the base and flags given still win (named in a warning),
as for ``crossattn train``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .train import apply_flags, saved_configs, start

CLIP_FLAGS = ("negatives",)  # flags that set a ClipConfig field


def build_configs(args: argparse.Namespace):
    """``(ClipConfig, TrainingConfig)``: defaults (or the resumed run's), then the flags given."""
    from ..config import CLIP_TRAINING_DEFAULTS, TrainingConfig
    from ..models.clip_model import ClipConfig

    if args.resume:
        clip, training = saved_configs(Path(args.out), ClipConfig)
    else:
        clip, training = ClipConfig(), TrainingConfig(**CLIP_TRAINING_DEFAULTS)
        if args.recipe:
            from ..training.recipes import get_recipe

            clip, training = get_recipe(args.recipe, clip=True).apply(clip, training)
    return apply_flags(args, clip, training, CLIP_FLAGS)


def run(args: argparse.Namespace) -> int:
    from ..training.clip_training import train_clip

    start(args)
    clip, training = build_configs(args)
    result = train_clip(
        clip, training, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress
    )
    if result.final is not None:
        print(result.final, flush=True)
    return 0
