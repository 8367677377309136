"""Training throughput, measured side by side in one run.

1. samples/s of the ``crossattn`` training loop (accelerate, EMA, data loading from the scenes
   dataset, logging, per-step seeded noise) versus a bare PyTorch loop over the same model, batch
   size and optimizer on one pre-built batch (no data loading, no EMA, no accelerate).
   Target: ratio >= 0.9.
2. samples/s of data generation (scenes rendered, tokenized, collated into batches, the loop's own
   path) versus what training consumes. Target: >= 10x.

The two loops alternate (bare, loop, loop, bare, ...) and each is summarised by its median step
time, so load from other processes on a shared machine hits both alike.

    PYTHONPATH=src python benchmarks/train_throughput.py --steps 6 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from alternating import alternate

from crossattn.config import ModelConfig, TrainingConfig
from crossattn.data.shapes import ShapesDataset
from crossattn.models.loading import placeholder_pipeline
from crossattn.models.model import make_scheduler
from crossattn.training.batching import CaptionCollate
from crossattn.training.train import train


def bare_loop_step_times(cfg: ModelConfig, batch_size: int, steps: int) -> list[float]:
    """Plain PyTorch: forward, v-loss, backward, clip, AdamW, on one fixed batch."""
    pipe = placeholder_pipeline(cfg)
    unet, text_encoder, tok = pipe.unet.train(), pipe.text_encoder.train(), pipe.tokenizer
    sched = make_scheduler("ddpm", dict(pipe.scheduler.config))
    params = [*unet.parameters(), *text_encoder.parameters()]
    opt = torch.optim.AdamW(params, lr=5e-4)
    data = ShapesDataset(batch_size, resolution=cfg.resolution)
    batch = CaptionCollate(tok, text_encoder.config.max_position_embeddings)([data[i] for i in range(batch_size)])
    x0, ids = batch["pixel_values"], batch["input_ids"]  # (B, 3, H, W), (B, T)
    times = []
    for _ in range(steps):
        tick = time.perf_counter()
        noise = torch.randn_like(x0)
        t = torch.randint(0, 1000, (batch_size,))
        pred = unet(sched.add_noise(x0, noise, t), t, encoder_hidden_states=text_encoder(ids)[0]).sample
        loss = torch.nn.functional.mse_loss(pred, sched.get_velocity(x0, noise, t))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - tick)
    return times


def loop_step_times(cfg: ModelConfig, batch_size: int, steps: int) -> list[float]:
    """The real loop; step times from an ``on_step_end`` hook (set-up, first step and the last step, which checkpoints, excluded)."""
    stamps: list[float] = []
    config = TrainingConfig(
        steps=steps + 2, batch_size=batch_size, sample_every=0, checkpoint_every=10**6, log_every=10**6
    )
    with tempfile.TemporaryDirectory() as tmp:
        stamps.append(time.perf_counter())  # replaced: the first interval starts at step 1's end
        train(cfg, config, lambda n: ShapesDataset(n, resolution=cfg.resolution), Path(tmp) / "run",
              on_step_end=lambda s: stamps.append(time.perf_counter()), progress=False)  # fmt: skip
    stamps = stamps[1:]  # step 1 (warm-up, includes set-up) dropped
    return [b - a for a, b in zip(stamps[:-1], stamps[1:], strict=True)][:steps]


def data_samples_per_s(cfg: ModelConfig, batch_size: int, batches: int) -> float:
    """Scenes → collated batches through a ``DataLoader``, the loop's own data path."""
    from crossattn.models.tokenizer import load_tokenizer

    data = ShapesDataset(batch_size * batches, resolution=cfg.resolution, seed=1)
    collate = CaptionCollate(load_tokenizer(max_length=cfg.text_max_length), cfg.text_max_length)
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, collate_fn=collate)
    tick = time.perf_counter()
    for _ in loader:
        pass
    return batch_size * batches / (time.perf_counter() - tick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-config", help="ModelConfig JSON (default: the default model)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of both loops")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = ModelConfig.load(args.model_config) if args.model_config else ModelConfig()
    n = args.steps + 1  # the first timed step is the warm-up, dropped
    runs = {
        "bare": lambda: bare_loop_step_times(cfg, args.batch_size, n),
        "loop": lambda: loop_step_times(cfg, args.batch_size, n),
    }
    times = alternate(runs, args.rounds, "s/step")
    bare, ours = times["bare"], times["loop"]
    b, o = statistics.median(bare), statistics.median(ours)
    print(f"threads {args.threads}, batch {args.batch_size}, {len(bare)} + {len(ours)} timed steps")
    print(f"bare PyTorch loop : {b:.3f} s/step  {args.batch_size / b:8.1f} samples/s")
    print(f"crossattn loop    : {o:.3f} s/step  {args.batch_size / o:8.1f} samples/s")
    print(f"ratio loop / bare : {b / o:.3f}   (target >= 0.9)")
    gen = data_samples_per_s(cfg, args.batch_size, 20)
    consumed = args.batch_size / o
    print(f"data generation   : {gen:8.1f} samples/s = {gen / consumed:.1f}x what training consumes (target >= 10)")


if __name__ == "__main__":
    main()
