"""Capture at the size people run it: random-weight denoisers at the real widths, 1024×1024, on this CPU.

Issue 38 part 2. Each configuration is built from its published config (written out here: nothing is
downloaded), with random weights, in float32, and measured in two fresh processes, so one's memory cannot
hide in the other's:

- ``untraced``: two denoiser forwards (batch 1, text states of the real length) → peak resident memory;
- ``traced``: one forward untraced, three under ``crossattn.trace(model)`` (the default capture: every
  cross-attention block, mean over heads and steps), one more untraced → peak resident memory, the ratio of
  the traced forwards' median CPU time to the untraced ones' (side by side in one process; wall-clock too: on
  a loaded machine the process's CPU time is what other processes inflate least), and the bytes of maps the
  tracer holds after one and after three forwards (flat: the store keeps running sums).

Peak memory is ``ru_maxrss`` of each child. Bars (the issue's): traced ÷ untraced ≤ 1.05, extra peak ≤ 5 % of
the untraced peak, maps flat in steps.

Configurations (1024×1024: latent 128×128; the MM-DiTs patch it to 4096 image tokens):

- ``sdxl``: SDXL-base's ``UNet2DConditionModel``, whole (2.6 B parameters), 77 text tokens of width 2048;
- ``sd3``: SD3-medium's MMDiT widths (24 heads × 64, text 4096 → 1536), ``--sd3-blocks`` blocks, 333 text
  tokens (77 CLIP + 256 T5);
- ``flux1``: FLUX.1-dev's widths (24 heads × 128, rope 16+56+56), ``--flux-blocks`` double + single blocks,
  512 T5 tokens;
- ``flux2``: FLUX.2-dev's widths (48 heads × 128, text width 15360, 4-axis rope), ``--flux2-blocks`` double +
  single blocks, 512 text tokens.

    PYTHONPATH=src:. python benchmarks/realsize.py [--tiny] [--configs sdxl,sd3,flux1] [--threads 1]

``--tiny`` runs the same code on shapes a few channels wide (seconds; ``tests/test_realsize.py``).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

CONFIGS = ("sdxl", "sd3", "flux1", "flux2")


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="sdxl,sd3,flux1", help="comma-separated, of: " + ", ".join(CONFIGS))
    p.add_argument("--tiny", action="store_true", help="tiny widths and a 16x16 latent (a check of the script)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads in each child (default: %(default)s)")
    p.add_argument("--sd3-blocks", type=int, default=4, help="SD3 joint blocks (real: 24; default: %(default)s)")
    p.add_argument(
        "--flux-blocks", default="1,2", help="Flux.1 double,single blocks (real: 19,38; default: %(default)s)"
    )
    p.add_argument(
        "--flux2-blocks", default="1,1", help="Flux.2 double,single blocks (real: 8,48; default: %(default)s)"
    )
    p.add_argument("--steps", type=int, default=3, help="traced forwards (default: %(default)s)")
    p.add_argument("--child", choices=("untraced", "traced"), help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, help="also write the results here")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------------------- models


def sdxl(tiny: bool):
    """SDXL-base's U-Net (``stabilityai/stable-diffusion-xl-base-1.0/unet/config.json``) and its inputs."""
    from diffusers import UNet2DConditionModel

    width, text, time_dim, latent = (32, 32, 8, 16) if tiny else (2048, 1280, 256, 128)
    unet = UNet2DConditionModel(
        sample_size=latent,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(32, 64, 64) if tiny else (320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(1, 2, 2) if tiny else (5, 10, 20),  # diffusers' name for SDXL's head counts (64 wide)
        transformer_layers_per_block=(1, 1, 1) if tiny else (1, 2, 10),
        cross_attention_dim=width,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=text + 6 * time_dim,  # pooled text + 6 size/crop ids
    )
    inputs = {
        "sample": torch.randn(1, 4, latent, latent),
        "timestep": torch.tensor([500]),
        "encoder_hidden_states": torch.randn(1, 77, width),  # (1, T, 2048): CLIP-L 768 + bigG 1280
        "added_cond_kwargs": {
            "text_embeds": torch.randn(1, text),
            "time_ids": torch.tensor([[1024.0] * 2 + [0.0] * 2 + [1024.0] * 2]),
        },
    }
    return unet, inputs


def sd3(tiny: bool, blocks: int):
    """SD3-medium's MMDiT (``stabilityai/stable-diffusion-3-medium-diffusers/transformer``), ``blocks`` blocks."""
    from diffusers import SD3Transformer2DModel

    heads, head_dim, text, pooled, latent = (2, 8, 32, 32, 16) if tiny else (24, 64, 4096, 2048, 128)
    model = SD3Transformer2DModel(
        sample_size=latent,
        patch_size=2,
        in_channels=16,
        num_layers=blocks,
        attention_head_dim=head_dim,
        num_attention_heads=heads,
        joint_attention_dim=text,
        caption_projection_dim=heads * head_dim,
        pooled_projection_dim=pooled,
        out_channels=16,
        pos_embed_max_size=max(latent, 192 if not tiny else latent),
    )
    inputs = {
        "hidden_states": torch.randn(1, 16, latent, latent),
        "encoder_hidden_states": torch.randn(1, 77 + 256, text),  # (1, 333, 4096): CLIP L+G padded, then T5
        "pooled_projections": torch.randn(1, pooled),
        "timestep": torch.tensor([500.0]),
    }
    return model, inputs


def flux_ids(side: int, text: int, axes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flux's position ids: ``(side², axes)`` image ids (0…, row, column) and ``(text, axes)`` zeros."""
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    image = torch.zeros(side * side, axes)
    image[:, axes - 2], image[:, axes - 1] = rows.flatten(), cols.flatten()  # (N, axes): row, column last
    return image, torch.zeros(text, axes)


def flux(tiny: bool, version: int, double: int, single: int):
    """FLUX.1-dev's (``version`` 1) or FLUX.2-dev's (2) transformer widths with ``double`` + ``single`` blocks."""
    from diffusers import Flux2Transformer2DModel, FluxTransformer2DModel

    side = 8 if tiny else 64  # 2×2 patches of the 128×128 latent: 4096 image tokens
    if version == 1:
        heads, head_dim, text, rope = (2, 16, 32, (4, 4, 8)) if tiny else (24, 128, 4096, (16, 56, 56))
        channels, extra = 64, {"pooled_projection_dim": 16 if tiny else 768}
        cls = FluxTransformer2DModel
    else:
        heads, head_dim, text, rope = (2, 16, 32, (4, 4, 4, 4)) if tiny else (48, 128, 15360, (32, 32, 32, 32))
        channels, extra, cls = 128, {}, Flux2Transformer2DModel
    model = cls(
        patch_size=1,
        in_channels=channels,
        num_layers=double,
        num_single_layers=single,
        attention_head_dim=head_dim,
        num_attention_heads=heads,
        joint_attention_dim=text,
        guidance_embeds=True,
        axes_dims_rope=rope,
        **extra,
    )
    img_ids, txt_ids = flux_ids(side, 512, len(rope))
    inputs = {
        "hidden_states": torch.randn(1, side * side, channels),  # (1, N, C): packed latent patches
        "encoder_hidden_states": torch.randn(1, 512, text),  # (1, 512, text width)
        "timestep": torch.tensor([0.5]),
        "img_ids": img_ids,
        "txt_ids": txt_ids,
        "guidance": torch.tensor([3.5]),
    }
    if version == 1:
        inputs["pooled_projections"] = torch.randn(1, extra["pooled_projection_dim"])
    return model, inputs


def build(name: str, args: argparse.Namespace):
    """The denoiser of configuration ``name`` (eval mode, seeded) and one forward's keyword inputs."""
    torch.manual_seed(0)
    if name == "sdxl":
        model, inputs = sdxl(args.tiny)
    elif name == "sd3":
        model, inputs = sd3(args.tiny, args.sd3_blocks)
    else:
        double, single = (int(n) for n in (args.flux2_blocks if name == "flux2" else args.flux_blocks).split(","))
        model, inputs = flux(args.tiny, 1 if name == "flux1" else 2, double, single)
    return model.eval(), inputs


# ---------------------------------------------------------------------------------------------------------- children


def forward(model, inputs, result: dict, kind: str) -> None:
    """One denoiser forward; its wall-clock and its CPU seconds appended to ``result[kind + "_s"]`` and
    ``result[kind + "_cpu"]`` (CPU time of a one-thread process: what other processes' load inflates least)."""
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        model(**inputs)
    result[kind + "_s"].append(time.perf_counter() - wall)
    result[kind + "_cpu"].append(time.process_time() - cpu)


def child(name: str, args: argparse.Namespace) -> dict:
    """One configuration in this (fresh) process: the forwards of ``args.child`` and this process's peak memory."""
    import crossattn

    torch.set_num_threads(args.threads)
    model, inputs = build(name, args)
    params = sum(p.numel() for p in model.parameters())
    result = {"config": name, "mode": args.child, "parameters": params, "bytes": []}
    result.update({key: [] for key in ("untraced_s", "traced_s", "untraced_cpu", "traced_cpu")})
    forward(model, inputs, result, "untraced")
    if args.child == "untraced":
        forward(model, inputs, result, "untraced")
    else:
        with crossattn.trace(model) as tracer:
            for step in range(args.steps):
                forward(model, inputs, result, "traced")
                if step in (0, args.steps - 1):
                    result["bytes"].append(tracer.nbytes())  # after the first and the last forward
        forward(model, inputs, result, "untraced")
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes
    return result


def run_child(name: str, mode: str, args: argparse.Namespace) -> dict:
    """``name`` in a fresh Python process in ``mode``; its result (the last line it prints, JSON)."""
    argv = [sys.executable, __file__, "--child", mode, "--configs", name, "--threads", str(args.threads)]
    argv += ["--sd3-blocks", str(args.sd3_blocks), "--flux-blocks", args.flux_blocks, "--steps", str(args.steps)]
    argv += ["--flux2-blocks", args.flux2_blocks]
    argv += ["--tiny"] if args.tiny else []
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"config": name, "mode": mode, "error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(untraced: dict, traced: dict) -> dict:
    """The row of one configuration: time ratio (side by side, traced child), extra peak, map bytes by steps."""
    if "error" in untraced or "error" in traced:
        return {"config": untraced["config"], "error": untraced.get("error") or traced.get("error")}
    ratio = statistics.median(traced["traced_cpu"]) / statistics.median(traced["untraced_cpu"])  # CPU seconds
    extra = traced["peak_mb"] - untraced["peak_mb"]
    return {
        "config": untraced["config"],
        "parameters": untraced["parameters"],
        "untraced_s": statistics.median(traced["untraced_s"]),
        "traced_s": statistics.median(traced["traced_s"]),
        "ratio": ratio,
        "wall_ratio": statistics.median(traced["traced_s"]) / statistics.median(traced["untraced_s"]),
        "untraced_peak_mb": untraced["peak_mb"],
        "traced_peak_mb": traced["peak_mb"],
        "extra_peak_pct": 100 * extra / untraced["peak_mb"],
        "forwards": {key: traced[key] for key in ("untraced_s", "traced_s", "untraced_cpu", "traced_cpu")},
        "bytes_1": traced["bytes"][0],
        "bytes_last": traced["bytes"][-1],
        "pass": ratio <= 1.05 and extra <= 0.05 * untraced["peak_mb"] and traced["bytes"][0] == traced["bytes"][-1],
    }


def main(argv=None) -> list[dict]:
    args = parse(argv)
    names = args.configs.split(",")
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        raise SystemExit(f"unknown configs {unknown}; accepted: {', '.join(CONFIGS)}")
    if args.child:
        print(json.dumps(child(names[0], args)))
        return []
    print(f"{'tiny' if args.tiny else '1024x1024'}, float32, {args.threads} thread(s), {args.steps} traced forwards")
    print(f"{'config':7} {'params':>8} {'untraced s':>10} {'ratio':>6} {'peak MB':>8} {'extra %':>8} {'maps B @1':>10} {'@last':>10} {'wall ratio':>10}")  # fmt: skip
    rows = []
    for name in names:
        row = summary(run_child(name, "untraced", args), run_child(name, "traced", args))
        rows.append(row)
        if "error" in row:
            print(f"{name:7} failed: {row['error']}")
            continue
        print(
            f"{name:7} {row['parameters'] / 1e6:7.0f}M {row['untraced_s']:10.2f} {row['ratio']:6.3f} "
            f"{row['untraced_peak_mb']:8.0f} {row['extra_peak_pct']:+8.2f} {row['bytes_1']:10d} {row['bytes_last']:10d} {row['wall_ratio']:10.3f}"
            f"  {'ok' if row['pass'] else 'MISSES A BAR'}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    main()
