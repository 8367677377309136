"""LoRA fine-tuning throughput, measured side by side in one run (issue 44).

samples/s of ``crossattn finetune DATA`` with its defaults (LoRA rank 16 with LoCon, the new word's
embedding rows, batch 4, EMA, accelerate, data loading, logging, checkpoints on their schedule; run
as a user runs it, in a subprocess, timed from its own log) against the same LoRA step written as a
bare peft + torch loop: the same base model, the same adapters (``add_lora``) and new-word rows
(``train_token_rows``), the same batch size and optimizer, on one fixed batch (no data loading, no
EMA, no accelerate, no logging). Target: ratio >= 0.9.

The two alternate (bare, loop, loop, bare, ...) so drifting load from other processes hits both.
Data: the ring benchmark's folder (35 rings + 15 scenes of known shapes; no prior images are drawn,
which cost set-up time, not step time).

    python benchmarks/finetune_throughput.py --steps 60 --rounds 2 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from alternating import alternate

SRC = Path(__file__).resolve().parents[1] / "src"
LOG_EVERY = 10  # the loop's default log interval: its log's timestamps are 10 steps apart


def ring_folder(root: Path) -> Path:
    from crossattn.data.shapes import export_image_folder

    return export_image_folder(root / "data", 35, seed=0, kind="one", shapes=("ring",), prior=15)


def loop_rates(data: Path, steps: int, threads: int) -> list[float]:
    """samples/s of each 10-step window of a real ``crossattn finetune`` run (the first holds the
    warm-up; :func:`alternating.alternate` drops it)."""
    from crossattn.commands.finetune import LORA_BATCH

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        command = [sys.executable, "-m", "crossattn", "finetune", str(data), "--out", str(run)]
        command += ["--steps", str(steps), "--prior", "0", "--no-samples", "--no-progress", "--threads", str(threads)]
        env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        subprocess.run(command, check=True, env=env, capture_output=True)
        records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    stamps = [r["time"] for r in records if r["step"] % LOG_EVERY == 0]
    return [LOG_EVERY * LORA_BATCH / (b - a) for a, b in zip(stamps[:-1], stamps[1:], strict=True)]


def finetune_defaults():
    """``crossattn finetune``'s flags at their defaults (LoRA rank, LoCon and its rank), from its own parser."""
    from crossattn.cli import build_parser

    return build_parser().parse_args(["finetune", "DATA"])


def bare_rates(data: Path, steps: int) -> list[float]:
    """samples/s of the bare loop, per 10-step window (the first holds the warm-up, as for the loop)."""
    from crossattn.commands.finetune import LORA_BATCH, LORA_LR, NEW_WORD_LR
    from crossattn.data.folder import ImageFolderDataset
    from crossattn.models.loading import default_model_dir, load_pipeline
    from crossattn.models.model import make_scheduler
    from crossattn.training.batching import CaptionCollate
    from crossattn.training.lora import add_lora, new_word_tokens
    from crossattn.training.train_setup import train_token_rows

    pipe = load_pipeline(default_model_dir())
    pipe.unet.float(), pipe.text_encoder.float()
    defaults = finetune_defaults()
    add_lora(pipe, defaults.lora, convs=defaults.lora_convs, conv_rank=defaults.lora_conv_rank)
    unet, text_encoder = pipe.unet.train(), pipe.text_encoder
    rows = train_token_rows(text_encoder, new_word_tokens(pipe.tokenizer, ["ring"]))
    adapters = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": adapters, "lr": LORA_LR}, {"params": [rows], "lr": NEW_WORD_LR}])
    sched = make_scheduler("ddpm", dict(pipe.scheduler.config))
    dataset = ImageFolderDataset(data, 32)
    batch = CaptionCollate(pipe.tokenizer, 16)([dataset[i] for i in range(LORA_BATCH)])
    x0, ids = batch["pixel_values"], batch["input_ids"]  # (B, 3, 32, 32), (B, T)
    stamps = []
    for step in range(steps):
        noise, t = torch.randn_like(x0), torch.randint(0, 1000, (LORA_BATCH,))
        text = text_encoder(ids)[0]  # (B, T, D)
        pred = unet(sched.add_noise(x0, noise, t), t, encoder_hidden_states=text).sample
        loss = torch.nn.functional.mse_loss(pred, sched.get_velocity(x0, noise, t))
        loss.backward()
        torch.nn.utils.clip_grad_norm_([*adapters, rows], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % LOG_EVERY == 0:
            stamps.append(time.perf_counter())
    return [LOG_EVERY * LORA_BATCH / (b - a) for a, b in zip(stamps[:-1], stamps[1:], strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="steps per run (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of both loops")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data = ring_folder(Path(tmp))
        runs = {
            "bare": lambda: bare_rates(data, args.steps + 1),
            "loop": lambda: loop_rates(data, args.steps, args.threads),
        }
        rates = alternate(runs, args.rounds, "samples/s")
    bare, ours = rates["bare"], rates["loop"]
    b, o = statistics.median(bare), statistics.median(ours)
    print(f"threads {args.threads}, {len(bare)} + {len(ours)} ten-step windows")
    print(f"bare peft + torch loop : {b:6.1f} samples/s")
    print(f"crossattn finetune     : {o:6.1f} samples/s")
    print(f"ratio finetune / bare  : {o / b:.3f}   (target >= 0.9)")


if __name__ == "__main__":
    main()
