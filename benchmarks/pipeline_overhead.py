"""Pipeline overhead: ``CrossAttnPipeline.__call__`` against a bare ``unet`` + ``scheduler.step``
loop on the same inputs (default model config, 20 steps, guidance 4 so both run a batch of 2).

All are timed in the same run, interleaved, and the median of each is compared.
Target (foundation issue): ratio ≤ 1.05 with relation guidance off (the bare loop has none).
The prompt names a relation, so the run also prices relation guidance (on by default):
the pipeline with it against the pipeline without.

    python benchmarks/pipeline_overhead.py [--repeats 7] [--steps 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from crossattn.config import SamplingConfig
from crossattn.models.loading import load_pipeline

PROMPT = "a red circle left of a blue square"


def bare_loop(pipe, text_states: torch.Tensor, noise: torch.Tensor, steps: int, guidance: float) -> torch.Tensor:
    """What the pipeline does, with nothing around it: CFG batch, unet, guidance, scheduler.step."""
    scheduler = pipe.scheduler
    scheduler.set_timesteps(steps)
    x = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_in = scheduler.scale_model_input(torch.cat([x, x]), t)  # (2, C, H, W)
        uncond, cond = pipe.unet(model_in, t, encoder_hidden_states=text_states).sample.chunk(2)
        x = scheduler.step(uncond + guidance * (cond - uncond), t, x).prev_sample
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = load_pipeline()
    pipe.set_progress_bar_config(disable=True)
    size = pipe.unet.config.sample_size
    with torch.no_grad():
        text_states = torch.cat([pipe.encode_prompt([""]), pipe.encode_prompt([PROMPT])])  # (2, T, D)

    def run_pipeline(relation_guidance: float = 0.0) -> None:
        pipe(
            PROMPT,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            relation_guidance=relation_guidance,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
        )

    def run_relation() -> None:
        run_pipeline(SamplingConfig.relation_guidance)

    def run_bare() -> None:
        noise = torch.randn((1, 3, size, size), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            bare_loop(pipe, text_states, noise, args.steps, args.guidance)

    runs = {"pipeline": run_pipeline, "bare": run_bare, "relation": run_relation}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for fn in runs.values():  # warm-up
        fn()
    for _ in range(args.repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    pipe_s, bare_s, rel_s = (statistics.median(times[name]) for name in ("pipeline", "bare", "relation"))
    print(f"steps={args.steps} guidance={args.guidance} threads={args.threads} repeats={args.repeats}")
    print(f"pipeline  median {pipe_s * 1000:8.1f} ms")
    print(f"bare loop median {bare_s * 1000:8.1f} ms")
    print(f"pipeline with relation guidance median {rel_s * 1000:8.1f} ms")
    print(f"ratio pipeline / bare = {pipe_s / bare_s:.3f}  (target <= 1.05)")
    print(f"ratio relation guidance on / off = {rel_s / pipe_s:.3f}")


if __name__ == "__main__":
    main()
