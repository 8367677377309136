"""The flags several sub-commands share, each declared once: value types and flag groups.

Each command module (``crossattn/commands/<name>.py``) declares its own sub-command in ``add_parser``
and takes from here what it shares with others: ``--model``, ``--seed``, ``--negative``, ``--out``,
``--overwrite``; the sampler group (``--steps/--guidance/--scheduler``, also ``edit``'s), sizes,
devices; and the training groups (``train`` and ``train-clip`` the data, optimizer and schedule
flags; ``train``, ``train-clip`` and ``finetune`` the run-folder flags). A helper takes a ``help`` where
commands word a flag differently. Nothing heavy is imported: ``crossattn --help`` stays instant.
"""

from __future__ import annotations

import argparse


def share(text: str) -> float:
    """A share in [0, 1] (argparse ``type``), with an error naming the value otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, got {text}")
    return value


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def thread_count(text: str) -> int:
    """argparse type: CPU threads, a whole number from 1 to this machine's cores (more only oversubscribe
    the cores, and torch crashes on absurd counts)."""
    import os

    value, cores = positive_int(text), os.cpu_count() or 1
    if value > cores:
        raise argparse.ArgumentTypeError(f"{value} is more than the {cores} CPU cores this machine has")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: a whole number >= 0 (seeds)."""
    value = int(text) if text.lstrip("-").isdigit() else None
    if value is None or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number >= 0")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 0")
    return value


# ---------------------------------------------------------------------- flags most commands take

#: ``--model``'s help where a run folder is accepted beside a pipeline folder
MODEL_HELP = "a diffusers pipeline folder, or a run folder (its final/) (default: the shipped model)"


def add_model_flag(p, help: str = MODEL_HELP) -> None:
    p.add_argument("--model", metavar="PATH", help=help)


def add_seed_flag(p, help: str = "random seed (default: %(default)s)") -> None:
    p.add_argument("--seed", type=non_negative_int, default=0, help=help)


def add_negative_flag(p) -> None:
    p.add_argument("--negative", metavar="TEXT", default=None, help="negative prompt (default: empty)")


def add_out_flag(p, default: str = "outputs") -> None:
    p.add_argument("--out", metavar="DIR", default=default, help="output folder (default: %(default)s)")


def add_overwrite_flag(p, help: str = "replace existing output files") -> None:
    p.add_argument("--overwrite", action="store_true", help=help)


# ---------------------------------------------------------------------- sampling commands


def add_lora_flag(p) -> None:
    p.add_argument(
        "--lora",
        metavar="DIR",
        help="a LoRA folder (crossattn finetune's OUT, or OUT/final) loaded on top of --model",
    )


def add_relation_guidance_flag(p) -> None:
    from ..config import SamplingConfig

    p.add_argument(
        "--relation-guidance",
        type=non_negative_float,
        default=SamplingConfig.relation_guidance,
        metavar="F",
        help="steer 'OBJECT left of/right of/above/below OBJECT' prompts (also 'to the left of', 'under', ...) "
        "on their attention maps during the first steps so the relation holds; 0 = the model alone "
        "(default: %(default)s)",
    )


def add_sampler_flags(p, guidance_help: str = "classifier-free guidance scale (default: %(default)s)") -> None:
    """``--steps``, ``--guidance`` and ``--scheduler``: how a sampling command samples (defaults: SamplingConfig's)."""
    from ..config import SamplingConfig

    p.add_argument(
        "--steps", type=positive_int, default=SamplingConfig.steps, help="denoising steps (default: %(default)s)"
    )
    p.add_argument("--guidance", type=float, default=SamplingConfig.guidance_scale, help=guidance_help)
    p.add_argument("--scheduler", metavar="NAME", help="sampler: ddpm, ddim, dpm++ or euler (default: the model's own)")


def add_size_flags(p) -> None:
    """``--height`` and ``--width`` of the images made (each a multiple of what the model divides it by)."""
    for side in ("height", "width"):
        p.add_argument(
            f"--{side}",
            type=positive_int,
            metavar="PX",
            help=f"image {side} in pixels, e.g. 96 x 64 non-square (default: the model's own size)",
        )


def add_device_flags(p, quiet: bool = True, dtype: bool = True) -> None:
    """``--device``, ``--dtype`` (where the command loads the model itself), ``--threads`` and (sampling
    bar) ``--quiet``."""
    p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: cpu)")
    if dtype:
        p.add_argument(
            "--dtype",
            choices=("float32", "float16", "bfloat16"),
            help="weights and compute dtype: float32 on CPU (bfloat16 works there too), float16 / bfloat16 on a GPU "
            "(default: float32)",
        )
    p.add_argument("--threads", type=thread_count, metavar="N", help="CPU threads for torch (default: torch's choice)")
    if quiet:
        p.add_argument("--quiet", action="store_true", help="no sampling progress bar")


# ---------------------------------------------------------------------- training commands


def add_run_folder_flags(p, out: str) -> None:
    """``--out RUN``, ``--resume`` and ``--overwrite`` of a training run folder."""
    p.add_argument("--out", metavar="DIR", default=out, help="run folder (default: %(default)s)")
    p.add_argument("--resume", metavar="CKPT", help="continue the run in --out: 'latest' or a checkpoint folder")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")


def add_recipe_flag(p, clip: bool) -> None:
    """``--recipe NAME``: a named model + training preset (:mod:`crossattn.training.recipes`) in place of the defaults."""
    from ..training.recipes import CLIP_RECIPES, UNET_RECIPES

    recipes = CLIP_RECIPES if clip else UNET_RECIPES
    listed = "; ".join(f"{r.name}: {r.summary}" for r in recipes.values())
    p.add_argument("--recipe", metavar="NAME", help=f"start from a named recipe, flags given still win ({listed})")


def add_data_flags(p, d, named: bool = True) -> None:
    """Data size, order and batching; ``named`` adds ``--data`` (the mini-CLIP has only its scenes)."""
    if named:
        p.add_argument("--data", metavar="NAME", help=f"training data: shapes (default: {d.data})")
    p.add_argument(
        "--dataset-size", metavar="N", type=non_negative_int, help="scenes in the dataset; 0 = one per sample drawn"
    )
    p.add_argument(
        "--data-seed",
        metavar="N",
        type=non_negative_int,
        help=f"seed of the scenes and their order (default: {d.data_seed})",
    )
    p.add_argument(
        "--num-workers",
        metavar="N",
        type=non_negative_int,
        help=f"data loader worker processes (default: {d.num_workers})",
    )
    p.add_argument(
        "--counting",
        metavar="F",
        type=share,
        help="share of counting scenes ('two red circles [and a blue square]') in the procedural data "
        f"(default: {d.counting}, none)",
    )
    p.add_argument("--steps", metavar="N", type=positive_int, help=f"optimizer steps (default: {d.steps})")
    p.add_argument(
        "--batch-size",
        metavar="N",
        type=positive_int,
        help=f"images per process per micro-step (default: {d.batch_size})",
    )
    p.add_argument(
        "--grad-accum", metavar="N", type=positive_int, help=f"micro-steps per optimizer step (default: {d.grad_accum})"
    )


def add_optimizer_flags(p, d) -> None:
    p.add_argument(
        "--lr",
        dest="learning_rate",
        metavar="F",
        type=float,
        help=f"AdamW peak learning rate (default: {d.learning_rate})",
    )
    p.add_argument(
        "--lr-schedule",
        metavar="NAME",
        help=f"cosine, linear, constant_with_warmup or constant (default: {d.lr_schedule})",
    )
    p.add_argument(
        "--warmup-steps", metavar="N", type=non_negative_int, help=f"linear warm-up steps (default: {d.warmup_steps})"
    )
    p.add_argument("--weight-decay", metavar="F", type=float, help=f"AdamW weight decay (default: {d.weight_decay})")
    p.add_argument(
        "--max-grad-norm", metavar="F", type=float, help=f"gradient clipping norm, 0 = off (default: {d.max_grad_norm})"
    )
    add_mixed_precision_flag(p, d.mixed_precision)
    p.add_argument(
        "--ema-decay", metavar="F", type=float, help=f"EMA decay of the saved weights, 0 = off (default: {d.ema_decay})"
    )


def add_schedule_flags(p, d) -> None:
    p.add_argument(
        "--seed", metavar="N", type=non_negative_int, help=f"seed of the init and of noise draws (default: {d.seed})"
    )
    p.add_argument(
        "--checkpoint-every",
        metavar="N",
        type=positive_int,
        help=f"steps between checkpoints (default: {d.checkpoint_every})",
    )
    p.add_argument(
        "--keep-checkpoints", metavar="N", type=positive_int, help=f"checkpoints kept (default: {d.keep_checkpoints})"
    )
    p.add_argument(
        "--sample-every",
        metavar="N",
        type=non_negative_int,
        help=f"steps between sample grids (train-clip: held-out probes), 0 = off (default: {d.sample_every})",
    )
    p.add_argument(
        "--log-every", metavar="N", type=positive_int, help=f"steps between log lines (default: {d.log_every})"
    )
    p.add_argument(
        "--time-limit",
        metavar="MIN",
        type=float,
        help="stop after this many minutes of training clock in all, with a checkpoint and OUT/final; the clock is kept "
        "across --resume latest (resume with a larger limit to go on) (default: none)",
    )
    p.add_argument(
        "--snapshot-minutes",
        metavar="MIN",
        type=non_negative_float,
        nargs="+",
        help="minutes of the training clock at which the EMA weights go to OUT/snapshots/minute-MMM, "
        "e.g. 1 2 4 (default: the recipe's, else none)",
    )
    p.add_argument("--fp16", dest="save_fp16", action="store_const", const=True, help="save OUT/final in fp16")


def add_training_process_flags(p, threads_help: str) -> None:
    """``--threads`` (its help names what the threads are per) and ``--no-progress``."""
    p.add_argument("--threads", metavar="N", type=thread_count, help=threads_help)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_mixed_precision_flag(p, default: str) -> None:
    p.add_argument("--mixed-precision", metavar="NAME", help=f"auto, no, fp16 or bf16 (default: {default})")


# ---------------------------------------------------------------------- the conventions of diffusers' training scripts


def add_validation_flags(p) -> None:
    """``--validation-prompt P`` (repeatable) and ``--validation-every N``: word maps beside the base model's."""
    p.add_argument(
        "--validation-prompt",
        action="append",
        metavar="P",
        help="a prompt whose word maps are drawn under the current weights beside the base model's (same seed) at "
        "each validation, into OUT/validation/step-N/, with how far each word's map moved and how concentrated it "
        "is (OUT/validation/metrics.json, .csv, .png); repeatable (default: no validation)",
    )
    p.add_argument(
        "--validation-every",
        type=positive_int,
        metavar="N",
        help="steps between validations, and the last step (default: a quarter of --steps)",
    )


def add_run_convention_flags(p, d) -> None:
    """What users of diffusers' training scripts expect: trackers, checkpoint limits, precision, memory."""
    p.add_argument(
        "--report-to",
        choices=("tensorboard", "none"),
        help="accelerate's tracker for losses and validation numbers, written to OUT/ (default: tensorboard when "
        "installed, else none)",
    )
    p.add_argument(
        "--checkpoints-limit",
        dest="keep_checkpoints",
        type=positive_int,
        metavar="K",
        help=f"checkpoints kept, the oldest deleted first (default: {d.keep_checkpoints})",
    )
    add_mixed_precision_flag(p, d.mixed_precision)
    p.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="recompute the U-Net's activations in the backward pass: less memory, ~30 %% slower steps",
    )


def add_dataset_column_flags(p) -> None:
    """``--image-column`` / ``--caption-column`` of a local Hugging Face ``datasets`` folder given as DATA."""
    p.add_argument(
        "--image-column",
        metavar="NAME",
        default="image",
        help="DATA as a datasets folder (save_to_disk or parquet): the image column (default: %(default)s)",
    )
    p.add_argument(
        "--caption-column",
        metavar="NAME",
        default="text",
        help="DATA as a datasets folder: the caption column (default: %(default)s)",
    )
