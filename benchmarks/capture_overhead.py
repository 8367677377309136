"""Cost of recording cross-attention, measured side by side in one run.

On the default model config (the shipped model, or its untrained placeholder: timing does not
depend on the weights), sample one image with classifier-free guidance and time, interleaved
over several repeats:

  untraced     diffusers' default processors (AttnProcessor2_0, fused SDPA) everywhere
  traced       ``crossattn.trace(pipe)``: all cross-attention layers recorded, aggregated
  AttnProcessor diffusers' explicit reference processor on every layer (what hook-based tools
               such as DAAM / prompt-to-prompt need to read probabilities), nothing recorded

and print the median time of each, its ratio to the untraced median, and the paired ratio (median
over repeats of each run ÷ the untraced run of the same repeat; target for traced: <= 1.10).
Then check that the tracer's memory after 50 steps equals that after 10 steps (aggregated).

    PYTHONPATH=src python benchmarks/capture_overhead.py [--steps 20] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
import warnings

import torch


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20, help="sampling steps per image (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per condition (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    return p.parse_args()


@contextlib.contextmanager
def reference_everywhere(pipe):
    """diffusers' explicit ``AttnProcessor`` on every layer; the previous processors afterwards."""
    from diffusers.models.attention_processor import AttnProcessor

    saved = dict(pipe.unet.attn_processors)
    pipe.unet.set_attn_processor(AttnProcessor())
    try:
        yield None
    finally:
        pipe.unet.set_attn_processor(dict(saved))


def run_once(pipe, steps: int, device: str) -> float:
    generator = torch.Generator(device="cpu").manual_seed(0)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    pipe("a red circle left of a blue square", num_inference_steps=steps, generator=generator, output_type="pt")
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def interleave(conditions: dict, run, steps: int, repeats: int) -> dict[str, list[float]]:
    """Seconds of ``run(steps)`` inside each condition (name → a context-manager factory), after a 2-step
    warm-up of each, the conditions interleaved over ``repeats`` so load from other processes hits them alike."""
    for make in conditions.values():  # warm-up
        with make():
            run(2)
    times = {name: [] for name in conditions}
    for _ in range(repeats):
        for name, make in conditions.items():
            with make():
                times[name].append(run(steps))
    return times


def time_conditions(pipe, steps: int, repeats: int, device: str) -> dict[str, list[float]]:
    """Untraced, traced and diffusers' explicit processor on the default model, interleaved."""
    import crossattn

    conditions = {
        "untraced": contextlib.nullcontext,
        "traced (all cross, aggregated)": lambda: crossattn.trace(pipe),
        "diffusers AttnProcessor (all layers)": lambda: reference_everywhere(pipe),
    }
    return interleave(conditions, lambda n: run_once(pipe, n, device), steps, repeats)


def tracer_memory(pipe, steps: int, per_step: bool = False) -> int:
    import crossattn

    with crossattn.trace(pipe, per_step=per_step) as tracer:
        run_once(pipe, steps, "cpu")
    return tracer.nbytes()


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    from crossattn.models.loading import load_pipeline

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = load_pipeline(device=args.device)
    pipe.set_progress_bar_config(disable=True)
    cross = sum(k.endswith("attn2.processor") for k in pipe.unet.attn_processors)
    print(
        f"device {args.device}, threads {args.threads}, {args.steps} steps, guidance 4 (U-Net batch 2), "
        f"{len(pipe.unet.attn_processors)} attention layers ({cross} cross), {args.repeats} repeats"
    )
    times = time_conditions(pipe, args.steps, args.repeats, args.device)
    base = statistics.median(times["untraced"])
    print(f"{'condition':40s} {'median s':>9s} {'ratio':>7s} {'paired':>7s}   all runs (s)")
    for name, values in times.items():
        median = statistics.median(values)
        # paired: the median over repeats of (this run / the untraced run just before it), less drift
        paired = statistics.median(v / u for v, u in zip(values, times["untraced"], strict=True))
        runs = " ".join(f"{v:.2f}" for v in values)
        print(f"{name:40s} {median:9.3f} {median / base:7.3f} {paired:7.3f}   {runs}")
    m10, m50 = tracer_memory(pipe, 10), tracer_memory(pipe, 50)
    p10 = tracer_memory(pipe, 10, per_step=True)
    print(f"tracer memory, aggregated: {m10} B after 10 steps, {m50} B after 50 steps -> equal: {m10 == m50}")
    print(f"tracer memory, per_step=True: {p10} B after 10 steps ({p10 / m10:.0f}x the aggregated store)")


if __name__ == "__main__":
    main()
