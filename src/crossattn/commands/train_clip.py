"""``crossattn train-clip``: the mini-CLIP on procedural scenes with hard negatives (:mod:`crossattn.training.clip_training`).

Defaults come from :data:`crossattn.config.CLIP_TRAINING_DEFAULTS` and :class:`ClipConfig`; on
``--resume`` the run's saved ``config.json`` is the base and flags given still win (named in a warning),
as for ``crossattn train``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .flags import (
    add_data_flags,
    add_optimizer_flags,
    add_recipe_flag,
    add_run_folder_flags,
    add_schedule_flags,
    add_training_process_flags,
    positive_int,
)
from .train import apply_flags, saved_configs, start

CLIP_FLAGS = ("negatives",)  # flags that set a ClipConfig field


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train-clip",
        help="train the mini-CLIP (text + vision towers) on scenes with hard negatives",
        description="Contrastive training of a small transformers CLIPModel on procedural scenes; every caption is "
        "also scored against hard negatives (relation flipped, objects swapped, position, colour, shape). "
        "Writes OUT/final, a CLIP folder whose text tower a pipeline can use as its text encoder.",
    )
    add_run_folder_flags(p, out="outputs/clip")
    add_clip_training_flags(p)
    add_training_process_flags(p, "torch CPU threads per process (default: torch's choice)")
    return p


def add_clip_training_flags(p) -> None:
    """``crossattn train-clip``'s overrides: data, optimizer and schedule flags with the mini-CLIP's defaults."""
    from ..config import CLIP_TRAINING_DEFAULTS, TrainingConfig

    d = TrainingConfig(**CLIP_TRAINING_DEFAULTS)
    add_recipe_flag(p, clip=True)
    p.add_argument(
        "--init-from", metavar="PATH", help="continue from a CLIP folder (e.g. src/crossattn/pretrained/clip)"
    )
    p.add_argument(
        "--negatives", metavar="N", type=positive_int, help="hard negatives scored against each image (default: 2)"
    )
    add_data_flags(p, d, named=False)
    add_optimizer_flags(p, d)
    add_schedule_flags(p, d)


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
