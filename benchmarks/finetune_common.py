"""What the two fine-tuning examples (``ring_finetune.py``, ``digits_finetune.py``) share: run
``crossattn finetune`` as a user would, load the base and the tuned model (base + LoRA, or the
whole pipeline a ``--full`` run writes), draw seeded samples, score the original one-object
prompts. Not a benchmark itself."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"


def add_common_arguments(parser: argparse.ArgumentParser, steps: int | None, batch_size: int | None) -> None:
    """Flags both examples take (base model, fine-tuning length, sampling settings). A training flag left
    at None is not passed: ``crossattn finetune``'s own default applies."""
    parser.add_argument("--model", metavar="PATH", help="base pipeline folder (default: the shipped model)")
    parser.add_argument("--out", metavar="DIR", required=True, help="work folder: data/, run/ (must not hold a run)")
    parser.add_argument(
        "--lora",
        metavar="DIR",
        help="score this result of an earlier run instead of fine-tuning: an adapter or a --full pipeline folder",
    )
    parser.add_argument("--full", action="store_true", help="fine-tune all weights instead of a LoRA adapter")
    parser.add_argument("--steps", type=int, default=steps, help="fine-tuning steps (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=batch_size, help="(default: %(default)s)")
    parser.add_argument("--rank", type=int, help="LoRA rank (default: finetune's)")
    parser.add_argument("--seed", type=int, help="finetune --seed: training seed (default: finetune's)")
    parser.add_argument(
        "--prior-images", type=int, help="finetune --prior: images the base model draws (default: finetune's)"
    )
    parser.add_argument("--lr", type=float, help="learning rate (default: finetune's)")
    parser.add_argument("--train-text-encoder", action="store_true", help="also adapt the text encoder")
    parser.add_argument(
        "--lora-convs",
        action=argparse.BooleanOptionalAction,
        help="LoRA on the resnet convolutions too (LoCon) or not (default: finetune's)",
    )
    parser.add_argument("--embedding-lr", type=float, help="token-embedding LR (with --full --train-text-encoder)")
    parser.add_argument("--no-samples", action="store_true", help="finetune without its before/after grids")
    parser.add_argument("--sample-steps", type=int, default=20, help="denoising steps (default: %(default)s)")
    parser.add_argument("--guidance", type=float, default=4.0, help="guidance scale (default: %(default)s)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")


def run_settings(args: argparse.Namespace) -> dict:
    """How the tuned model was (or is to be) made, for the report."""
    keys = (
        "steps",
        "batch_size",
        "full",
        "rank",
        "lr",
        "embedding_lr",
        "no_samples",
        "train_text_encoder",
        "lora_convs",
        "prior_images",
        "seed",
    )
    return {k: getattr(args, k) for k in keys} | {"scored": args.lora}


def run_finetune(data: Path, run: Path, args: argparse.Namespace) -> tuple[Path, float]:
    """``python -m crossattn finetune DATA ...`` in a subprocess (this tree's ``src`` first on the
    path, as a user's install would be); returns ``OUT/final`` (adapter or pipeline folder) and the
    seconds it took."""
    command = [sys.executable, "-m", "crossattn", "finetune", str(data), "--out", str(run)]
    command += ["--full"] if args.full else (["--lora", str(args.rank)] if args.rank else [])
    command += ["--steps", str(args.steps)] if args.steps else []
    command += ["--batch-size", str(args.batch_size)] if args.batch_size else []
    command += ["--prior", str(args.prior_images)] if args.prior_images is not None else []
    command += ["--seed", str(args.seed)] if args.seed is not None else []
    command += ["--model", args.model] if args.model else []
    command += ["--lr", str(args.lr)] if args.lr else []
    command += ["--threads", str(args.threads)] if args.threads else []
    command += ["--train-text-encoder"] if args.train_text_encoder else []
    command += [] if args.lora_convs is None else ["--lora-convs" if args.lora_convs else "--no-lora-convs"]
    command += ["--embedding-lr", str(args.embedding_lr)] if args.embedding_lr else []
    command += ["--no-samples"] if args.no_samples else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    print("$", " ".join(command), flush=True)
    start, cpu = time.perf_counter(), child_cpu_seconds()
    subprocess.run(command, check=True, env=env)
    seconds = time.perf_counter() - start
    print(f"fine-tuning: {seconds:.0f} s wall, {child_cpu_seconds() - cpu:.0f} s of CPU (user + system)", flush=True)
    return run / "final", seconds


def child_cpu_seconds() -> float:
    """CPU seconds (user + system) used so far by finished child processes: what a fine-tune costs in
    CPU-minutes, which a machine busy with other jobs does not inflate as it does wall time."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def load_models(model: str | None, tuned_dir: Path | None):
    """The base pipeline and, with ``tuned_dir``, the tuned one: that folder itself when it is a
    pipeline (``--full``), else a second copy of the base with the adapter loaded."""
    from crossattn.models.loading import load_pipeline
    from crossattn.training.lora import load_lora

    full = tuned_dir is not None and (tuned_dir / "model_index.json").is_file()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "No LoRA keys associated to CLIPTextModel" for U-Net-only adapters
        base = load_pipeline(model)
        tuned = load_pipeline(tuned_dir if full else model) if tuned_dir else None
        if tuned is not None and not full:
            load_lora(tuned, tuned_dir)  # the adapter, and the new words' embedding rows when saved
    for pipe in (base, tuned):
        if pipe is not None:
            pipe.set_progress_bar_config(disable=True)
    return base, tuned


def sample(pipe, captions: list[str], seeds: list[int], args: argparse.Namespace, batch: int = 20) -> np.ndarray:
    """Seeded images ``(N, H, W, 3)`` uint8, image i from the noise of seed i (evaluation's generator)."""
    from crossattn.config import SamplingConfig
    from crossattn.evaluation.run import EvalPrompt, EvalSettings, generate

    settings = EvalSettings(sampling=SamplingConfig(steps=args.sample_steps, guidance_scale=args.guidance))
    prompts = [EvalPrompt(c, "one", s) for c, s in zip(captions, seeds, strict=True)]
    chunks = [generate(pipe, prompts[i : i + batch], settings)[0] for i in range(0, len(prompts), batch)]
    return np.concatenate(chunks)


def one_object_scores(pipe, args: argparse.Namespace, n: int, shapes: tuple[str, ...]) -> dict[str, float]:
    """The evaluation's one-object categories (colour, shape, object, count, position) on the
    one-object half of its seeded prompt set (``2 n`` prompts → ``n`` one-object), judged by an
    analyzer that also knows ``shapes`` (so a circle turned ring counts as a wrong shape)."""
    from crossattn.config import SamplingConfig
    from crossattn.evaluation.run import EvalSettings, accuracy_table, eval_prompts, evaluate_batch

    sampling = SamplingConfig(steps=args.sample_steps, guidance_scale=args.guidance)
    settings = EvalSettings(sampling=sampling, analyzer_shapes=shapes)
    prompts = [p for p in eval_prompts(2 * n) if p.kind in ("one", "one_position")]
    resolution = int(pipe.unet.config.sample_size)
    results = []
    for i in range(0, len(prompts), settings.batch_size):
        results += evaluate_batch(pipe, prompts[i : i + settings.batch_size], settings, resolution)
    table = accuracy_table(results)
    return {k.split(".", 1)[1]: v["accuracy"] for k, v in table.items() if k.startswith("one.") and "[" not in k}


def print_comparison(title: str, rows: dict[str, dict[str, float]]) -> None:
    """A table: one column per model (``rows``: model → metric → value)."""
    names = list(rows)
    metrics = list(rows[names[0]])
    print(title)
    print(f"{'metric':<12}" + "".join(f"{n:>14}" for n in names))
    for m in metrics:
        print(f"{m:<12}" + "".join(f"{rows[n].get(m, float('nan')):>14.3f}" for n in names))


def finish_report(out: Path, report: dict) -> None:
    """Print ``report["verdict"]`` (bar → passed) and write the whole report to ``OUT/report.json``."""
    from crossattn.files import atomic_write_json

    for bar, ok in report["verdict"].items():
        print(f"{bar}: {'PASS' if ok else 'FAIL'}")
    atomic_write_json(out / "report.json", report)
    print(f"report: {out / 'report.json'}")
