"""Cost and memory of recording attention on every model family, measured side by side in one run.

For each family's tiny random pipeline (``tests/family_pipelines.py``: SD-1.5, SDXL, SD3, Flux, and
Qwen-Image, Flux.2, SD3.5, PixArt-Σ, Sana; the shapes of the real models, a few channels wide) sample two prompts at a non-square size with and
without ``crossattn.trace(pipe)`` (the default capture: every cross-attention layer, mean over heads
and steps), interleaved over repeats so load from other processes hits both alike, and print the
median time of each and their ratio (targets: U-Net families <= 1.05, joint-attention <= 1.3).

Memory: the tracer's bytes after 10 and after 50 steps (the streamed store: equal), and, for an
SDXL-shaped U-Net at 1024×1024 (attention at 64×64 and 32×32 latents, as SDXL), the bytes the
default capture holds against the sum of its layers' maps at their own resolutions and against one
map per layer upsampled to the image.

    PYTHONPATH=src:. python benchmarks/family_capture.py [--steps 20] [--repeats 7] [--threads 1] [--families ...]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests.family_pipelines

FAMILIES = ("sd15", "sdxl", "sd3", "flux", "qwenimage", "flux2", "sd35", "pixart-sigma", "sana")
PROMPTS = ["a red circle left of a blue square", "a green triangle"]


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20, help="sampling steps per run (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=7, help="timed runs per condition (default: %(default)s)")
    p.add_argument("--height", type=int, default=64, help="image height (default: %(default)s)")
    p.add_argument("--width", type=int, default=96, help="image width (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    p.add_argument("--families", nargs="+", default=FAMILIES, choices=FAMILIES, help="families (default: all)")
    return p.parse_args()


def run_once(pipe, steps: int, size: tuple[int, int], prompts=PROMPTS) -> float:
    """Seconds for one sampling of ``prompts`` (latents out: no VAE decode in the timing)."""
    from crossattn.models.loading import takes_argument

    kwargs = {"max_sequence_length": 77} if takes_argument(pipe, "max_sequence_length") else {}
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    pipe(prompt=prompts, num_inference_steps=steps, height=size[0], width=size[1], generator=generator,
         output_type="latent", **kwargs)  # fmt: skip
    return time.perf_counter() - start


def overhead(pipe, steps: int, repeats: int, size: tuple[int, int]) -> dict[str, float]:
    """Median seconds untraced and traced (interleaved: :func:`capture_overhead.interleave`), and their ratio."""
    from capture_overhead import interleave

    import crossattn

    conditions = {"untraced": contextlib.nullcontext, "traced": lambda: crossattn.trace(pipe)}
    times = interleave(conditions, lambda n: run_once(pipe, n, size), steps, repeats)
    medians = {name: statistics.median(t) for name, t in times.items()}
    return {**medians, "ratio": medians["traced"] / medians["untraced"]}


def memory_by_steps(pipe, size: tuple[int, int]) -> list[int]:
    """The tracer's bytes after 10 and after 50 steps of one prompt."""
    import crossattn

    held = []
    for steps in (10, 50):
        with crossattn.trace(pipe) as tracer:
            run_once(pipe, steps, size, PROMPTS[:1])
        held.append(tracer.nbytes())
    return held


def sdxl_1024() -> dict[str, int]:
    """Bytes the default capture holds on an SDXL-shaped U-Net at 1024×1024 (one step), against its layers' maps at
    their own resolutions and against maps upsampled to the image."""
    from diffusers import UNet2DConditionModel
    from tests.attention_helpers import LATENT_UNET

    import crossattn
    from crossattn.attention.layers import attention_layers

    torch.manual_seed(0)
    unet = UNet2DConditionModel(  # SDXL's layout: no attention at the top level, 2 transformer layers below
        **{**LATENT_UNET, "sample_size": 128, "block_out_channels": (8, 16, 32)},
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=4,
        transformer_layers_per_block=(1, 2, 2),
    ).eval()
    tokens = 77
    with torch.no_grad(), crossattn.trace(unet) as tracer:
        unet(torch.randn(1, 4, 128, 128), 500, encoder_hidden_states=torch.randn(1, tokens, 16))
    cross = [layer for layer in attention_layers(unet) if layer.kind == "cross"]
    native = sum(layer.resolution**2 * tokens * 4 for layer in cross)  # float32 (N, K) per layer
    upsampled = len(cross) * 1024 * 1024 * tokens * 4
    return {"layers": len(cross), "held": tracer.nbytes(), "native": native, "upsampled": upsampled}


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    from tests.family_pipelines import build_family

    size = (args.height, args.width)
    print(f"{args.steps} steps, 2 prompts at {size[0]}x{size[1]}, {args.repeats} repeats, {args.threads} thread(s)")
    print(f"{'family':8} {'untraced s':>11} {'traced s':>9} {'ratio':>6} {'bytes @10':>10} {'bytes @50':>10}")
    for name in args.families:
        pipe = build_family(name)
        timing = overhead(pipe, args.steps, args.repeats, size)
        at10, at50 = memory_by_steps(pipe, size)
        print(
            f"{name:8} {timing['untraced']:11.3f} {timing['traced']:9.3f} {timing['ratio']:6.3f} {at10:10d} {at50:10d}"
        )
    big = sdxl_1024()
    print(
        f"SDXL-shaped U-Net at 1024x1024, {big['layers']} cross layers: capture holds {big['held']:,} bytes; "
        f"their maps at the layers' resolutions {big['native']:,}; upsampled to the image {big['upsampled']:,}"
    )


if __name__ == "__main__":
    main()
