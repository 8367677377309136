"""``crossattn train``: configs from defaults / JSON files / flags, the dataset, then :func:`crossattn.training.train.train`.

On ``--resume`` the run's own ``config.json`` is the base, so a resumed run continues with the
settings it started with; flags given on the command line still win (e.g. ``--steps`` to extend a
run), and each changed setting is named in a warning.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import warnings
from pathlib import Path

from ..config import ModelConfig, TrainingConfig
from ..errors import BadArgument, MissingFile
from .flags import (
    add_data_flags,
    add_optimizer_flags,
    add_recipe_flag,
    add_run_folder_flags,
    add_schedule_flags,
    add_training_process_flags,
    positive_int,
)

#: Flags that set a ``ModelConfig`` field (everything else maps onto ``TrainingConfig``).
MODEL_FLAGS = ("resolution",)


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train",
        help="train a model (or fine-tune a pipeline folder) on procedural scenes",
        description="Train the U-Net and text encoder with accelerate; writes OUT/final, a pipeline folder. "
        "Several CPU processes: torchrun --nproc_per_node 2 -m crossattn train ...",
    )
    add_run_folder_flags(p, out="outputs/train")
    add_training_flags(p)
    add_training_process_flags(p, "torch CPU threads per process (default: torch's choice)")
    return p


def add_training_flags(p) -> None:
    """Every ``TrainingConfig`` override of ``crossattn train``: each defaults to None (the config's value)."""
    d = TrainingConfig()
    add_recipe_flag(p, clip=False)
    p.add_argument("--config", metavar="JSON", help="a TrainingConfig JSON file (flags override it)")
    p.add_argument("--model-config", metavar="JSON", help="a ModelConfig JSON file (default: the default model)")
    p.add_argument("--init-from", metavar="PATH", help="start from a pipeline folder (fine-tuning)")
    p.add_argument(
        "--text-encoder",
        dest="text_encoder_from",
        metavar="PATH",
        help="use this CLIPTextModel folder, or a CLIP folder's text tower (src/crossattn/pretrained/clip), as the "
        "text encoder; with --freeze-text-encoder the U-Net learns to read it, as Stable Diffusion reads CLIP",
    )
    p.add_argument(
        "--scene-mix",
        metavar="F",
        type=float,
        nargs=4,
        help="shares of one, one-at-a-position, relation and 'and' scenes, e.g. 0.1 0.2 0.6 0.1 "
        "(default: 1/6 1/3 0.4 0.1)",
    )
    p.add_argument(
        "--resolution", metavar="N", type=positive_int, help="image side in pixels (default: the model config's)"
    )
    add_data_flags(p, d)
    add_optimizer_flags(p, d)
    add_diffusion_flags(p, d)
    add_schedule_flags(p, d)


def add_diffusion_flags(p, d) -> None:
    """The flags of the diffusion objective (not the mini-CLIP's)."""
    p.add_argument(
        "--caption-dropout", metavar="F", type=float, help=f"share of empty captions (default: {d.caption_dropout})"
    )
    p.add_argument(
        "--snr-gamma", metavar="F", type=float, help="min-SNR loss weighting with this gamma, e.g. 5 (default: off)"
    )
    p.add_argument(
        "--grounding-loss",
        dest="grounding_weight",
        metavar="F",
        type=float,
        help="weight of the token grounding loss on object words' cross-attention (TokenCompose), 0 = off "
        f"(default: {d.grounding_weight})",
    )
    p.add_argument(
        "--ground-positions",
        action="store_const",
        const=True,
        help="the grounding loss also on position words ('top left' attends to its object's pixels)",
    )
    p.add_argument(
        "--timestep-bias",
        metavar="F",
        type=float,
        help=f"training timesteps drawn with density ~ t^F; > 0 favours high noise (default: {d.timestep_bias})",
    )
    p.add_argument(
        "--embedding-lr",
        metavar="F",
        type=float,
        help="learning rate of the text encoder's token embeddings (default: --lr); a word whose states the "
        "text encoder drowns needs its row to move far",
    )
    p.add_argument(
        "--freeze-text-encoder",
        dest="train_text_encoder",
        action="store_const",
        const=False,
        help="train the U-Net only",
    )


def flag_overrides(args: argparse.Namespace, cls) -> dict:
    """The config fields the user set on the command line (flags default to None = not given)."""
    names = [f.name for f in dataclasses.fields(cls)]
    given = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    return {n: tuple(v) if isinstance(v, list) else v for n, v in given.items()}  # nargs lists: the configs' tuples


def model_config_from_folder(folder: str | Path) -> ModelConfig:
    """The ``ModelConfig`` of a pipeline folder: its ``crossattn_config.json``, or read off the
    U-Net, text encoder and scheduler configs (any folder of our layout)."""
    root = Path(folder)
    own = root / "crossattn_config.json"
    if own.is_file():
        return ModelConfig.load(own)
    unet = json.loads((root / "unet" / "config.json").read_text())
    text = json.loads((root / "text_encoder" / "config.json").read_text())
    sched = json.loads((root / "scheduler" / "scheduler_config.json").read_text())
    channels = tuple(unet["block_out_channels"])
    heads = unet["attention_head_dim"]
    heads = heads if isinstance(heads, list) else [heads] * len(channels)
    return ModelConfig(
        resolution=unet["sample_size"],
        in_channels=unet["in_channels"],
        block_out_channels=channels,
        cross_attention_levels=tuple(t.startswith("CrossAttn") for t in unet["down_block_types"]),
        layers_per_block=unet["layers_per_block"],
        attention_head_dim=channels[0] // heads[0],
        norm_num_groups=unet["norm_num_groups"],
        text_hidden_size=text["hidden_size"],
        text_layers=text["num_hidden_layers"],
        text_heads=text["num_attention_heads"],
        text_max_length=text["max_position_embeddings"],
        prediction_type=sched.get("prediction_type", "epsilon"),
    )


def saved_configs(out: Path, model_cls=ModelConfig) -> tuple:
    """The run's own ``(model config, TrainingConfig)`` from ``RUN/config.json`` (for ``--resume``)."""
    path = out / "config.json"
    if not path.is_file():
        raise MissingFile(f"--resume: {out} holds no run (no config.json); start the run without --resume")
    saved = json.loads(path.read_text(encoding="utf-8"))
    return model_cls.from_dict(saved["model"]), TrainingConfig.from_dict(saved["training"])


def fresh_configs(args: argparse.Namespace) -> tuple[ModelConfig, TrainingConfig]:
    """The defaults, or the ``--recipe``'s values over them; a JSON file given (``--model-config``,
    ``--config``) replaces its whole config, recipe included, as any flag given wins over the recipe."""
    model, training = ModelConfig(), TrainingConfig()
    if getattr(args, "recipe", None):
        from ..training.recipes import get_recipe

        model, training = get_recipe(args.recipe).apply(model, training)
    model = ModelConfig.load(args.model_config) if args.model_config else model
    training = TrainingConfig.load(args.config) if args.config else training
    init_from = args.init_from or training.init_from
    if init_from:
        from ..models.loading import check_model_folder

        model = model_config_from_folder(check_model_folder(init_from))
    return model, training


def build_configs(args: argparse.Namespace) -> tuple[ModelConfig, TrainingConfig]:
    """Defaults or JSON files (or the run's saved config on resume), then the flags given."""
    for name in ("config", "model_config"):
        path = getattr(args, name)
        if path and not Path(path).is_file():
            raise MissingFile(f"--{name.replace('_', '-')} {path}: no such file; give a JSON file")
    model, training = saved_configs(Path(args.out)) if args.resume else fresh_configs(args)
    return apply_flags(args, model, training, MODEL_FLAGS)


def apply_flags(args: argparse.Namespace, model, training: TrainingConfig, model_flag_names: tuple[str, ...]):
    """The flags given win over ``model`` / ``training``; on ``--resume`` each changed setting is named
    in a warning. ``model_flag_names`` set fields of the model config (the rest: ``TrainingConfig``)."""
    train_flags = {k: v for k, v in flag_overrides(args, TrainingConfig).items() if k not in model_flag_names}
    model_flags = {k: getattr(args, k) for k in model_flag_names if getattr(args, k, None) is not None}
    if args.resume:
        changed = {k: (getattr(training, k), v) for k, v in train_flags.items() if getattr(training, k) != v}
        changed |= {k: (getattr(model, k), v) for k, v in model_flags.items() if getattr(model, k) != v}
        if changed:
            listed = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items())
            warnings.warn(f"resuming with changed settings: {listed}", stacklevel=2)
    return dataclasses.replace(model, **model_flags), dataclasses.replace(training, **train_flags)


def make_dataset(model: ModelConfig, training: TrainingConfig):
    """The training data: procedural scenes (sized to the run) or, later, an image folder."""
    if training.data == "shapes":
        from ..data.shapes import ShapesDataset

        def scenes(needed: int):
            return ShapesDataset(
                training.dataset_size or needed,
                resolution=model.resolution,
                seed=training.data_seed,
                with_masks=training.grounding_weight > 0,
                kind_mix=training.scene_mix,
                position_masks=training.ground_positions,
                counting=training.counting,
            )

        return scenes
    raise BadArgument(f"--data {training.data!r}: accepted: shapes (image folders come with `crossattn finetune`)")


def start(args: argparse.Namespace) -> None:
    """What every training command checks first: threads, and that --resume and --overwrite are not both given."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.resume and args.overwrite:
        raise BadArgument("--resume and --overwrite contradict each other; pass one")


def run(args: argparse.Namespace) -> int:
    from ..training.train import train

    start(args)
    model, training = build_configs(args)
    result = train(
        model,
        training,
        make_dataset(model, training),
        args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    if result.final is not None:
        print(result.final, flush=True)
    return 0
