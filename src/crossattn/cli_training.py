"""The training commands' parsers (``train``, ``train-clip``, ``finetune``), apart from ``cli.py``'s
image commands: argparse only, no torch (``crossattn --help`` imports neither)."""

from __future__ import annotations

import argparse

from .cli_flags import (
    add_clip_training_flags,
    add_run_folder_flags,
    add_training_flags,
    add_training_process_flags,
    non_negative_int,
    positive_int,
)


def add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (or fine-tune a pipeline folder) on procedural scenes",
        description="Train the U-Net and text encoder with accelerate; writes OUT/final, a pipeline folder. "
        "Several CPU processes: torchrun --nproc_per_node 2 -m crossattn train ...",
    )
    add_run_folder_flags(p, out="outputs/train")
    add_training_flags(p)
    add_training_process_flags(p, "torch CPU threads per process (default: torch's choice)")
    p.set_defaults(command_module="train")


def add_train_clip(sub) -> None:
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
    p.set_defaults(command_module="train_clip")


def add_finetune(sub) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune a pipeline folder on an image folder (LoRA or full)",
        description="Fine-tune on DATA (images + metadata.jsonl with file_name and text). "
        "Writes OUT/final: a LoRA adapter (default) or, with --full, a pipeline folder.",
    )
    p.add_argument("data", metavar="DATA", help="image folder with metadata.jsonl (or metadata.csv)")
    p.add_argument("--model", metavar="PATH", help="pipeline folder to start from (default: the shipped model)")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--lora", type=positive_int, default=16, metavar="RANK", help="LoRA rank (default: %(default)s)")
    kind.add_argument("--full", action="store_true", help="train all weights instead of a LoRA adapter")
    p.add_argument("--train-text-encoder", action="store_true", help="also adapt the text encoder")
    p.add_argument("--steps", type=positive_int, help="optimizer steps (default: 1200 LoRA, 300 full)")
    p.add_argument("--lr", type=float, help="learning rate (default: 1e-3 LoRA, 5e-5 full)")
    p.add_argument(
        "--embedding-lr",
        type=float,
        metavar="F",
        help="learning rate of the token embeddings, so new words can move far from their untrained start "
        "(default: 5e-3 for LoRA's new words; --lr with --full --train-text-encoder)",
    )
    p.add_argument(
        "--lora-convs",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="LoRA: also adapt the U-Net's 3x3 resnet convolutions (LoCon): a new shape is drawn by them (default: on)",
    )
    p.add_argument(
        "--lora-conv-rank",
        type=positive_int,
        default=16,
        metavar="RANK",
        help="rank of the convolutions' adapters, apart from --lora's (LyCORIS' conv_dim; default: %(default)s)",
    )
    p.add_argument(
        "--prior",
        type=int,
        metavar="N",
        help="images the base model draws of what it knows (DreamBooth prior preservation), trained on beside "
        "DATA so it is not forgotten; 0 = off (default: as many as DATA's images, at most 200, for LoRA; 0 with "
        "--full)",
    )
    p.add_argument(
        "--no-new-words",
        action="store_true",
        help="LoRA: do not train the embedding rows of caption words outside the base model's vocabulary",
    )
    p.add_argument("--batch-size", type=positive_int, help="images per step (default: 4 LoRA, 16 full)")
    add_run_folder_flags(p, out="outputs/finetune")
    p.add_argument("--skip-bad", action="store_true", help="train on the good images when some are bad")
    p.add_argument("--flip", action="store_true", help="random horizontal flips (breaks left/right captions)")
    p.add_argument("--no-samples", action="store_true", help="skip the before/after sample grids (faster)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed (default: %(default)s)")
    p.add_argument(
        "--checkpoint-every", type=positive_int, default=100, help="steps between checkpoints (default: %(default)s)"
    )
    add_training_process_flags(p, "torch CPU threads (default: torch's choice)")
    p.set_defaults(command_module="finetune")
