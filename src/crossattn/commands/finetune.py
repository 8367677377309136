"""``crossattn finetune DATA``: the training loop started from a pipeline folder, on an image folder.

Not a second loop: :func:`crossattn.training.train.train` with ``init_from`` set, the user's image folder as
data, fine-tuning defaults (fewer steps, smaller learning rate) and, unless ``--full``, LoRA
adapters (peft) added before the optimizer is built, so only they train. The result in
``OUT/final`` is the adapter (``pytorch_lora_weights.safetensors``, diffusers' LoRA layout) or, with
``--full``, a whole pipeline folder. ``OUT/samples/before.png`` and the last step's grid show the
sample prompts before and after. In LoRA mode the base model first draws prior images of what it
already knows (``OUT/prior``, :mod:`crossattn.training.prior`; on an SD-1.5 / SDXL folder, of ``--class-prompt``:
:mod:`crossattn.commands.finetune_prior`), trained on beside the user's images.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

from ..config import TrainingConfig
from ..errors import BadArgument
from .finetune_prior import add_prior_flags, prior_data
from .flags import (
    add_dataset_column_flags,
    add_model_flag,
    add_run_convention_flags,
    add_run_folder_flags,
    add_seed_flag,
    add_training_process_flags,
    add_validation_flags,
    positive_int,
)

#: Fine-tuning defaults (flags override them). LoRA: many small steps, as DreamBooth-LoRA recipes
#: take (batch 1–4, ~1,000 steps); measured on a folder of 48 thin rings the shipped model never saw
#: (``benchmarks/ring_finetune.py --renderer pil``, rank 16, LoCon, lr 1e-3), batch 4 × 1,200 steps drew
#: the ring in 0.88 of 24 samples, batch 8 × 800 in 0.71, batch 16 × 500 in 0.79 (in ~400–500 CPU-s each).
LORA_LR, FULL_LR = 1e-3, 5e-5
LORA_STEPS, FULL_STEPS = 1200, 300
LORA_BATCH, FULL_BATCH = 4, 16
NEW_WORD_LR = 5e-3  # LoRA mode: the new words' embedding rows (textual inversion's order of magnitude)
SAMPLE_PROMPTS = 4


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "finetune",
        help="fine-tune a pipeline folder on an image folder (LoRA or full)",
        description="Fine-tune on DATA (images + metadata.jsonl with file_name and text, .txt captions, or a "
        "datasets folder); --model may be a crossattn, Stable Diffusion 1.x/2.x, SDXL, SD3 or Flux.1 pipeline folder. "
        "Writes OUT/final: a LoRA adapter (default) or, with --full, a pipeline folder.",
    )
    p.add_argument(
        "data",
        metavar="DATA",
        help="image folder with metadata.jsonl (or metadata.csv, or a .txt caption beside each image), or a local "
        "datasets folder (save_to_disk or parquet files)",
    )
    add_dataset_column_flags(p)
    add_model_flag(p, "pipeline folder to start from (default: the shipped model)")
    add_adapter_flags(p)
    add_prior_flags(p)
    p.add_argument("--batch-size", type=positive_int, help="images per step (default: 4 LoRA, 16 full)")
    add_run_folder_flags(p, out="outputs/finetune")
    p.add_argument("--skip-bad", action="store_true", help="train on the good images when some are bad")
    p.add_argument("--flip", action="store_true", help="random horizontal flips (breaks left/right captions)")
    p.add_argument("--no-samples", action="store_true", help="skip the before/after sample grids (faster)")
    add_seed_flag(p, "seed (default: %(default)s)")
    p.add_argument(
        "--checkpoint-every", type=positive_int, default=100, help="steps between checkpoints (default: %(default)s)"
    )
    add_validation_flags(p)
    add_run_convention_flags(p, TrainingConfig)
    add_training_process_flags(p, "torch CPU threads (default: torch's choice)")
    return p


def add_adapter_flags(p) -> None:
    """What trains and how fast: LoRA (rank, convolutions, new words) or all weights, steps, rates, prior images."""
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
        help="LoRA: also adapt the U-Net's 3x3 resnet convolutions (LoCon): a new shape is drawn by them "
        "(default: on for crossattn models, off for SD-1.5 / SDXL folders, whose LoRAs adapt attention)",
    )
    p.add_argument(
        "--lora-conv-rank",
        type=positive_int,
        default=16,
        metavar="RANK",
        help="rank of the convolutions' adapters, apart from --lora's (LyCORIS' conv_dim; default: %(default)s)",
    )
    p.add_argument(
        "--new-word",
        action="append",
        metavar="WORD",
        help="a caption word whose token-embedding rows train (on every CLIP tower) beside the LoRA; repeatable "
        "(default: the caption words outside a crossattn model's vocabulary; none for SD-1.5 / SDXL)",
    )
    p.add_argument(
        "--no-new-words",
        action="store_true",
        help="LoRA: do not train the embedding rows of caption words outside the base model's vocabulary",
    )


def base_model(args: argparse.Namespace) -> str | None:
    """The folder fine-tuning starts from: ``--model``, else the shipped default model."""
    from ..models.loading import check_model_folder, default_model_dir, has_default_model

    if args.model:
        return str(check_model_folder(args.model))
    if has_default_model():
        return str(default_model_dir())
    warnings.warn("no trained default model is shipped yet; fine-tuning the untrained placeholder", stacklevel=2)
    return None


def sample_prompts(dataset) -> tuple[str, ...]:
    """The first few distinct captions of the data: what the before/after grids show."""
    seen: list[str] = []
    for record in dataset.records:
        if record.text not in seen:
            seen.append(record.text)
    return tuple(seen[:SAMPLE_PROMPTS])


def new_words(args: argparse.Namespace, model: str | None, dataset) -> tuple[int, ...]:
    """LoRA mode: the token ids of caption words outside the base model's vocabulary, whose embedding
    rows train beside the adapter (none with ``--full``, where ``--train-text-encoder`` trains them)."""
    return tuple(sorted({i for ids in new_word_ids(args, model, dataset).values() for i in ids}))


def new_word_ids(args: argparse.Namespace, model: str | None, dataset) -> dict[str, list[int]]:
    """Each new word (``--new-word``, else the captions' words outside a crossattn model's vocabulary) → its
    token ids; empty with ``--full`` or ``--no-new-words``."""
    from transformers import CLIPTokenizer

    from ..models.vocabulary import load_vocabulary, unknown_words
    from ..training.lora import new_word_tokens

    if args.full or args.no_new_words or model is None:
        return {}
    words = {w.lower() for w in args.new_word or ()}
    vocabulary = None if words else load_vocabulary(model)
    if vocabulary:
        words = {w for record in dataset.records for w in unknown_words(record.text, vocabulary)}
    tokenizer = CLIPTokenizer.from_pretrained(Path(model) / "tokenizer")  # as the pipeline loads it
    return {w: new_word_tokens(tokenizer, [w]) for w in sorted(words)}


def training_config(
    args: argparse.Namespace, model: str | None, prompts: tuple[str, ...], token_ids: tuple[int, ...] = ()
) -> TrainingConfig:
    lr = args.lr or (FULL_LR if args.full else LORA_LR)
    steps = args.steps or (FULL_STEPS if args.full else LORA_STEPS)
    embedding_lr = args.embedding_lr or (NEW_WORD_LR if token_ids else None)
    return TrainingConfig(
        steps=steps,
        batch_size=args.batch_size or (FULL_BATCH if args.full else LORA_BATCH),
        learning_rate=lr,
        warmup_steps=min(50, steps // 10),
        train_text_encoder=args.train_text_encoder,
        embedding_lr=embedding_lr,
        trainable_token_ids=token_ids,
        seed=args.seed,
        data=str(args.data),
        init_from=model,
        checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints or TrainingConfig.keep_checkpoints,
        mixed_precision=args.mixed_precision or TrainingConfig.mixed_precision,
        sample_every=0 if args.no_samples else steps,  # the "after" grid, at the last step
        sample_prompts=prompts,
        save_fp16=False,
    )


def validation(args: argparse.Namespace, config: TrainingConfig, out: Path):
    """``--validation-prompt``'s word maps beside the base model's (:mod:`crossattn.training.validation`), or None."""
    from ..training.validation import Validation, ValidationSettings

    if not args.validation_prompt:
        if args.validation_every:
            raise BadArgument(f"--validation-every {args.validation_every} needs a --validation-prompt to draw")
        return None
    every, sampled = args.validation_every or max(1, config.steps // 4), config.sample_settings
    settings = ValidationSettings(
        tuple(args.validation_prompt), every, args.seed, sampled.steps, sampled.guidance_scale
    )
    return Validation(settings, out / "validation")


def customizer(args: argparse.Namespace, family: str | None):
    """What ``train`` does to the starting pipeline: LoRA adapters (unless ``--full``) and gradient checkpointing."""
    from ..training.lora import add_lora

    convs = {"convs": family is None if args.lora_convs is None else args.lora_convs, "conv_rank": args.lora_conv_rank}

    def customize(pipe) -> None:
        from ..attention.families import pipeline_denoiser
        from ..training.flow_matching import FLOW_PIPELINES, add_transformer_lora

        if not args.full and family in FLOW_PIPELINES:  # SD3 / Flux: the transformer's attention
            add_transformer_lora(pipe, args.lora)
        elif not args.full:
            add_lora(pipe, args.lora, args.train_text_encoder, **convs)
        if args.gradient_checkpointing:
            pipeline_denoiser(pipe).enable_gradient_checkpointing()

    return customize, convs["convs"]


def write_before_grid(model: str | None, config: TrainingConfig, out: Path) -> None:
    """The sample prompts drawn by the base model, as ``OUT/samples/before.png``."""
    from ..models.loading import load_pipeline
    from ..training.train import write_sample_grid

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = load_pipeline(model)
    pipe.set_progress_bar_config(disable=True)
    write_sample_grid(pipe, config, out / "samples" / "before.png")


def export_lora(pipe, folder: Path, info: dict) -> None:
    """``OUT/final`` for LoRA: the adapter weights, the new words' embedding rows (every CLIP tower), what they
    were trained on."""
    from ..training.flow_matching import FLOW_PIPELINES, save_transformer_lora
    from ..training.lora import save_lora, save_token_rows, write_model_card

    (save_transformer_lora if info["family"] in FLOW_PIPELINES else save_lora)(pipe, folder)
    save_token_rows(pipe, folder, info["new_word_tokens"], info.get("new_words"))
    (folder / "lora_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    write_model_card(folder, info, validation_images(Path(info["out"])))


def validation_images(out: Path) -> list[tuple[str, Path]]:
    """The last validation's images with their prompts (from their maps metadata): the model card's widget."""
    steps = sorted((out / "validation").glob("step-*"))
    if not steps:
        return []
    found = []
    for meta in sorted(steps[-1].glob("*.maps.json")):
        png = meta.with_name(meta.name.removesuffix(".maps.json") + ".png")
        found.append((json.loads(meta.read_text(encoding="utf-8"))["sampling"]["prompt"], png))
    return found


def load_data(args: argparse.Namespace, model: str | None):
    """The user's image folder at the resolution the model trains at (a latent family's: its VAE's input
    side), the ``ModelConfig`` recorded with the run, and the latent family (None: pixel space)."""
    from ..config import ModelConfig
    from ..data.folder import ImageFolderDataset
    from ..training.flow_matching import FLOW_PIPELINES, refuse_unsupported
    from ..training.latent import latent_family, latent_resolution
    from .train import model_config_from_folder

    family = latent_family(model)
    if family in FLOW_PIPELINES:
        refuse_unsupported(args, family)
    if family is not None and args.full:
        raise BadArgument(f"--full on a {family} folder is not supported; fine-tune it with LoRA (--lora RANK)")
    if family is not None and args.flip:
        raise BadArgument(
            f"--flip is not supported on a {family} folder yet (its latents are encoded once); leave it out"
        )
    model_config = model_config_from_folder(model) if model and family is None else ModelConfig()
    resolution = latent_resolution(model) if family else model_config.resolution
    columns = {"image_column": args.image_column, "caption_column": args.caption_column}
    data = ImageFolderDataset(args.data, resolution, flip=args.flip, skip_bad=args.skip_bad, **columns)
    if data.skipped:
        warnings.warn(
            f"skipped {data.skipped} bad entries of {args.data}; training on {len(data)} images", stacklevel=1
        )
    return data, model_config, family


def run(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.data import ConcatDataset

    from ..training.latent import LatentTrainer, latent_resolution
    from ..training.train import train

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.embedding_lr is not None and args.full and not args.train_text_encoder:
        raise BadArgument(
            f"--embedding-lr {args.embedding_lr} with --full needs --train-text-encoder (a frozen text encoder's "
            "embeddings do not train)"
        )
    model = base_model(args)
    data, model_config, family = load_data(args, model)
    words = new_word_ids(args, model, data)
    token_ids = tuple(sorted({i for ids in words.values() for i in ids}))
    config = training_config(args, model, sample_prompts(data), token_ids)
    out = Path(args.out)
    resolution = latent_resolution(model) if family else model_config.resolution
    prior = prior_data(args, model, data, out, resolution, family)
    lora = None if args.full else args.lora
    customize, convs = customizer(args, family)
    info = {"base_model": model, "family": family or "CrossAttnPipeline", "rank": lora}
    info.update(text_encoder=args.train_text_encoder, data=str(args.data))
    info["convs"] = args.lora_conv_rank if convs else 0  # their rank; 0: none
    info["new_word_tokens"], info["new_words"] = list(token_ids), words
    info["prior_images"] = len(prior) if prior is not None else 0
    if prior is not None:
        info.update(class_prompt=args.class_prompt, prior_loss_weight=args.prior_loss_weight)
    info.update(
        images=len(data), steps=config.steps, batch_size=config.batch_size, lr=config.learning_rate, out=str(out)
    )
    result = train(
        model_config,
        config,
        ConcatDataset([data, prior]) if prior is not None else data,
        out,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        customize=customize if lora or args.gradient_checkpointing else None,
        export=(lambda pipe, folder: export_lora(pipe, folder, info)) if lora else None,
        trainer_cls=LatentTrainer if family else None,
        validation=validation(args, config, out),
        report_to=args.report_to,
    )
    if result.final is not None:
        if not args.no_samples and not (out / "samples" / "before.png").is_file():  # a resumed run's too
            write_before_grid(model, config, out)
        print(result.final, flush=True)
    return 0
