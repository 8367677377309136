"""``crossattn generate --prompts-file``: images/s with prompts batched against one call per prompt.

64 prompts of the evaluation set (one-object, positions, relations and "and", so relation guidance
runs on the relation prompts as it does by default), the shipped model (32×32), 20 steps, guidance 4.
Both ways go through the library's own ``crossattn.sampling.sample`` (one generator per image, seed + index) and run
in the same process, one after the other, after a warm-up; the ratio of their images/s is printed,
with how far the two sets of images are apart. Target (issue 18): batched ≥ 2× one call per prompt.

    python benchmarks/generate_throughput.py --threads 1 [--prompts 64] [--batch-size 16] [--steps 20]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from crossattn.evaluation.run import eval_prompts
from crossattn.models.loading import load_pipeline
from crossattn.sampling import DEFAULT_BATCH_SIZE, SamplingRequest, plan, sample


def timed(pipe, jobs, cli: SamplingRequest, batch_size: int) -> tuple[float, list[np.ndarray]]:
    """Seconds to sample every job, ``batch_size`` at a time, and the images."""
    images = []
    start = time.perf_counter()
    for i in range(0, len(jobs), batch_size):
        images += [np.asarray(im) for im in sample(pipe, jobs[i : i + batch_size], cli)[0]]
    return time.perf_counter() - start, images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = load_pipeline()
    pipe.set_progress_bar_config(disable=True)
    cli = SamplingRequest([p.caption for p in eval_prompts(args.prompts)], steps=args.steps, out="unused")
    jobs = plan(cli)
    timed(pipe, jobs[:2], cli, 2)  # warm-up
    single_s, single = timed(pipe, jobs, cli, 1)
    batched_s, batched = timed(pipe, jobs, cli, args.batch_size)
    diff = max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(single, batched, strict=True))
    same = sum(np.array_equal(a, b) for a, b in zip(single, batched, strict=True))
    n = len(jobs)
    print(f"{n} prompts, {args.steps} steps, {args.threads} thread(s), {pipe.unet.config.sample_size}px")
    print(f"one call per prompt : {n / single_s:6.2f} images/s ({single_s:.1f} s)")
    print(f"batched ({args.batch_size:>3} a call): {n / batched_s:6.2f} images/s ({batched_s:.1f} s)")
    print(f"ratio batched / one per prompt: {single_s / batched_s:.2f}x")
    print(f"images: {same}/{n} PNG-identical, largest pixel difference {diff}/255")


if __name__ == "__main__":
    main()
