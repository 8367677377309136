"""Fine-tuning SD3 / Flux.1 folders with the flow-matching loss (issue 39): does the LoRA learn, and what a step costs.

For each tiny random family of ``tests/family_pipelines.py`` (SD3 at 64×64; Flux drawn and trained at 32×32, as
``tests/test_finetune_flow.py`` makes it: ``FluxPipeline`` fixes 256×256 on the tiny VAE), ``crossattn finetune`` trains
a rank-4 LoRA on 4 red rings for ``--steps`` steps (batch 4, lr 1e-2, no validation), then the flow-matching loss of
the 4 rings is measured at 32 fixed draws (seeds 0–31: caption kept, noise, timestep) with the base transformer and
with the saved adapter loaded by stock ``load_lora_weights``. Printed: that loss before and after, their ratio
(< 1: the adapter fits the data), and the run's seconds per step (from its log, checkpoints included).

    python benchmarks/finetune_flow.py --steps 150 --threads 1
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SIDE = {"sd3": 64, "flux": 32}


def small_flux(side: int) -> None:
    """``FluxPipeline`` draws (and so trains) at ``side`` pixels on the tiny VAE (its ``__init__`` fixes 128 latents)."""
    from diffusers import FluxPipeline

    import crossattn.training.latent as latent

    init = FluxPipeline.__init__

    @functools.wraps(init)  # diffusers reads the signature for the components
    def small(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.default_sample_size = side // 2

    FluxPipeline.__init__ = small
    latent.FLUX_SAMPLE_SIZE = side // 2


def eval_loss(pipe, batch, draws: int = 32) -> float:
    """The flow-matching loss of ``batch`` averaged over ``draws`` fixed draws (no caption dropout)."""
    from crossattn.config import TrainingConfig
    from crossattn.training.flow_matching import FAMILY_SETTINGS, flow_matching_loss, noise_schedule, prompt_encoder

    encoder, schedule, config = prompt_encoder(pipe, "cpu"), noise_schedule(pipe), TrainingConfig(caption_dropout=0.0)
    settings = FAMILY_SETTINGS[type(pipe).__name__]
    with torch.no_grad():
        losses = [
            flow_matching_loss(
                pipe.transformer, encoder, schedule, batch, torch.Generator().manual_seed(s), config, settings
            )
            for s in range(draws)
        ]
    return float(torch.stack(losses).mean())


def measure(family: str, root: Path, steps: int) -> dict:
    from tests.family_pipelines import load_family, save_family
    from tests.ring_images import ring_folder

    from crossattn.cli import main
    from crossattn.data.folder import ImageFolderDataset
    from crossattn.training.flow_matching import TowerCollate, flow_towers
    from crossattn.training.latent import encode_latents

    side = SIDE[family]
    model, data, out = (
        save_family(family, root / family),
        ring_folder(root / f"rings-{family}", side),
        root / f"run-{family}",
    )
    argv = ["finetune", str(data), "--model", str(model), "--out", str(out), "--steps", str(steps), "--lr", "1e-2"]
    tick = time.perf_counter()
    assert main([*argv, "--lora", "4", "--batch-size", "4", "--no-samples", "--no-progress"]) == 0
    seconds = time.perf_counter() - tick
    pipe = load_family(model)
    items = encode_latents(pipe.vae, ImageFolderDataset(data, side), "cpu")
    batch = TowerCollate(flow_towers(pipe))([items[i] for i in range(len(items))])
    base = eval_loss(pipe, batch)
    pipe.load_lora_weights(str(out / "final"))
    tuned = eval_loss(pipe, batch)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if '"loss"' in line]
    per_step = (log[-1]["time"] - log[0]["time"]) / max(log[-1]["step"] - log[0]["step"], 1)
    return {
        "family": family,
        "base": base,
        "tuned": tuned,
        "ratio": tuned / base,
        "s_per_step": per_step,
        "run_s": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--families", nargs="+", default=list(SIDE), choices=list(SIDE))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT))
    small_flux(SIDE["flux"])
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families:
            r = measure(family, Path(tmp), args.steps)
            print(
                f"{r['family']}: flow-matching loss at 32 fixed draws, base {r['base']:.4f} -> tuned {r['tuned']:.4f} "
                f"(ratio {r['ratio']:.3f}) after {args.steps} steps; {r['s_per_step']:.3f} s/step, run {r['run_s']:.1f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
