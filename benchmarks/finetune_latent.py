"""Fine-tuning a latent family (issue 39): what the one loop costs on the tiny SD-1.5, measured side by side.

1. **Step cost.** Seconds per LoRA step of ``crossattn finetune DATA --model SD15`` (LoRA rank 16 on the U-Net's
   attention, the new word's rows, batch 4, cached latents, EMA, accelerate, logging, checkpoints on their
   schedule; timed from its own log) against the same step written as a bare diffusers + peft loop: the same
   folder, the same adapters (``unet.add_adapter``, peft) and rows (peft trainable tokens), the latents encoded
   once by the same VAE, DDPM noise in latents, ε-MSE, AdamW, clipping; no EMA, no accelerate, no logging.
   Target: finetune / bare <= 1.1.
2. **Validation cost.** Wall seconds of a whole default run (``--steps`` as finetune's default) with the default
   validation settings (one ``--validation-prompt``; every ``steps // 4`` steps; the base model's maps once)
   against the same run without validation, and inside each run with validation the seconds (wall and this
   process's CPU) spent validating ÷ the rest of that run. Target: <= +10 %.

Runs alternate (A, B, B, A, ...: :mod:`alternating`) so drifting load from other processes hits both alike.
The tiny SD-1.5 is ``tests/family_pipelines.py``'s (16×16 images, 8×8×4 latents), saved once to a temp folder.

    python benchmarks/finetune_latent.py --rounds 2 --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from alternating import alternate

ROOT = Path(__file__).resolve().parents[1]
LOG_EVERY = 10  # the loop's default log interval: its log's timestamps are 10 steps apart
PROMPT = "a red ring"


def tiny_sd15(root: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    from tests.family_pipelines import save_family

    return save_family("sd15", root / "sd15")


def ring_folder(root: Path, n: int = 16) -> Path:
    """``n`` 16×16 red rings captioned "a red ring", at a few offsets."""
    import numpy as np
    from PIL import Image

    folder = root / "rings"
    folder.mkdir()
    lines = []
    for i in range(n):
        image = np.full((16, 16, 3), 255, np.uint8)
        dy, dx = i % 4, (i // 4) % 4
        image[dy + 1 : dy + 11, dx + 1 : dx + 11] = (220, 50, 47)
        image[dy + 4 : dy + 8, dx + 4 : dx + 8] = 255
        Image.fromarray(image).save(folder / f"{i}.png")
        lines.append(json.dumps({"file_name": f"{i}.png", "text": PROMPT}) + "\n")
    (folder / "metadata.jsonl").write_text("".join(lines))
    return folder


def finetune(data: Path, model: Path, out: Path, steps: int, *extra: str) -> float:
    """One ``crossattn finetune`` run in this process; returns its wall seconds."""
    from crossattn.cli import main

    argv = ["finetune", str(data), "--model", str(model), "--out", str(out), "--steps", str(steps)]
    argv += ["--new-word", "ring", "--no-samples", "--no-progress", "--report-to", "none", *extra]
    tick = time.perf_counter()
    if main(argv) != 0:
        raise SystemExit(f"finetune failed: {' '.join(argv)}")
    return time.perf_counter() - tick


def loop_step_seconds(data: Path, model: Path, steps: int) -> list[float]:
    """Seconds per step of each 10-step window of a real run (the first holds the warm-up)."""
    with tempfile.TemporaryDirectory() as tmp:
        finetune(data, model, Path(tmp) / "run", steps)
        records = [json.loads(line) for line in (Path(tmp) / "run" / "log.jsonl").read_text().splitlines()]
    stamps = [r["time"] for r in records if r["step"] % LOG_EVERY == 0]
    return [(b - a) / LOG_EVERY for a, b in zip(stamps[:-1], stamps[1:], strict=True)]


def loop_cpu_per_step(data: Path, model: Path, steps: int) -> float:
    """CPU seconds per step of a real run's whole loop (``Trainer.run``: steps, logging, checkpoints, final
    export; set-up excluded), one thread: the process's own CPU time, which other processes' load does not add to."""
    from crossattn.training.train import Trainer

    inner, spent = Trainer.run, []

    def timed(trainer, *args, **kwargs):
        tick = time.process_time()
        try:
            return inner(trainer, *args, **kwargs)
        finally:
            spent.append(time.process_time() - tick)

    Trainer.run = timed
    try:
        with tempfile.TemporaryDirectory() as tmp:
            finetune(data, model, Path(tmp) / "run", steps)
    finally:
        Trainer.run = inner
    return spent[0] / steps


def bare_step_seconds(data: Path, model: Path, steps: int, clock=time.perf_counter) -> list[float]:
    """Seconds per step of the bare diffusers + peft loop, per 10-step window (``clock``: wall or CPU time)."""
    from diffusers import DDPMScheduler, StableDiffusionPipeline
    from peft import LoraConfig, TrainableTokensConfig, inject_adapter_in_model

    from crossattn.commands.finetune import LORA_BATCH, LORA_LR, NEW_WORD_LR
    from crossattn.data.folder import ImageFolderDataset

    pipe = StableDiffusionPipeline.from_pretrained(model, use_safetensors=True, safety_checker=None)
    unet, vae, text_encoder, tok = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    for m in (unet, vae, text_encoder):
        m.requires_grad_(False)
    unet.add_adapter(
        LoraConfig(
            r=16, lora_alpha=16, init_lora_weights="gaussian", target_modules=["to_q", "to_k", "to_v", "to_out.0"]
        )
    )
    ring = tok("ring", add_special_tokens=False).input_ids
    inject_adapter_in_model(TrainableTokensConfig(token_indices=ring, target_modules=["token_embedding"]), text_encoder)
    rows = [p for p in text_encoder.parameters() if p.requires_grad]
    adapters = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [{"params": adapters, "lr": LORA_LR}, {"params": rows, "lr": NEW_WORD_LR, "weight_decay": 0.0}]
    )
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    dataset = ImageFolderDataset(data, 16)
    pixels = torch.stack([dataset[i]["pixel_values"] for i in range(len(dataset))])  # (N, 3, 16, 16)
    with torch.no_grad():  # cached once, as the loop does
        latents = vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor  # (N, 4, 8, 8)
    ids = torch.tensor([tok(PROMPT, padding="max_length", max_length=tok.model_max_length).input_ids] * LORA_BATCH)
    unet.train()
    stamps = []
    for step in range(steps):
        x0 = latents[torch.randint(0, len(latents), (LORA_BATCH,))]  # (B, 4, 8, 8)
        noise, t = torch.randn_like(x0), torch.randint(0, 1000, (LORA_BATCH,))
        text = text_encoder(ids)[0]  # (B, T, D)
        pred = unet(noise_scheduler.add_noise(x0, noise, t), t, encoder_hidden_states=text).sample
        loss = torch.nn.functional.mse_loss(pred, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([*adapters, *rows], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % LOG_EVERY == 0:
            stamps.append(clock())
    return [(b - a) / LOG_EVERY for a, b in zip(stamps[:-1], stamps[1:], strict=True)]


class ValidationClock:
    """Wall and CPU seconds spent in ``Trainer.validate`` (base maps, every validation) during the runs it is
    installed for: the validation's share of the very run it is part of. The CPU share (this process's own time,
    one thread) is the one other processes' load cannot tilt; the wall share can, when load changes mid-run."""

    def __init__(self) -> None:
        from crossattn.training.train import Trainer

        self.seconds, self.cpu, self.inner = 0.0, 0.0, Trainer.validate

        def timed(trainer, *args, **kwargs):
            tick, cpu = time.perf_counter(), time.process_time()
            try:
                return self.inner(trainer, *args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - tick
                self.cpu += time.process_time() - cpu

        Trainer.validate = timed


def validation_cost(data: Path, model: Path, steps: int, rounds: int) -> dict[str, dict[str, list[float]]]:
    """Runs with and without the default validation, alternating: ``"wall"`` and ``"cpu"`` (this process's own,
    one thread) whole-run seconds of each, and per run with validation the share of its wall and CPU time spent
    validating (``"share"``: ``{"wall": [...], "cpu": [...]}``)."""
    clock = ValidationClock()
    found: dict[str, dict[str, list[float]]] = {"share": {"wall": [], "cpu": []}, "cpu": {}}

    def run(name: str, *extra: str):
        def once() -> list[float]:
            with tempfile.TemporaryDirectory() as tmp:
                before, before_cpu, cpu = clock.seconds, clock.cpu, time.process_time()
                wall = finetune(data, model, Path(tmp) / "run", steps, *extra)
                cpu = time.process_time() - cpu
            found["cpu"].setdefault(name, []).append(cpu)
            if extra:
                inside, inside_cpu = clock.seconds - before, clock.cpu - before_cpu
                found["share"]["wall"].append(inside / (wall - inside))
                found["share"]["cpu"].append(inside_cpu / (cpu - inside_cpu))
            return [0.0, wall]  # no warm-up to drop

        return once

    runs = {"without": run("without"), "with validation": run("with validation", "--validation-prompt", PROMPT)}
    found["wall"] = alternate(runs, rounds, "s")
    return found


def report_validation(found: dict[str, dict[str, list[float]]], steps: int) -> None:
    """Prints :func:`validation_cost`'s whole-run ratios (wall, CPU) and the in-run shares."""
    for kind in ("wall", "cpu"):
        w, v = statistics.median(found[kind]["without"]), statistics.median(found[kind]["with validation"])
        print(
            f"{steps}-step run, {kind:<4} s, without validation: {w:7.1f}  "
            + ", ".join(f"{x:.1f}" for x in found[kind]["without"])
        )
        print(
            f"{steps}-step run, {kind:<4} s, default validation: {v:7.1f}  "
            + ", ".join(f"{x:.1f}" for x in found[kind]["with validation"])
        )
        print(f"whole-run {kind} ratio with / without validation: {v / w:.3f}   (target <= 1.10)")
    for kind in ("wall", "cpu"):
        listed = ", ".join(f"{100 * x:.1f} %" for x in found["share"][kind])
        print(f"validation {kind:<4} time / the rest of its run: {listed}")
        median = 100 * statistics.median(found["share"][kind])
        print(f"validation adds ({kind + ',':<5} median, in-run): {median:+.1f} %   (target <= +10 %)")


def step_cost(data: Path, model: Path, args: argparse.Namespace) -> None:
    """Prints a LoRA step's cost, finetune ÷ the bare loop: wall per 10-step window (alternating) and CPU time."""
    runs = {
        "bare": lambda: bare_step_seconds(data, model, args.step_steps + 1),
        "loop": lambda: loop_step_seconds(data, model, args.step_steps),
    }
    seconds = alternate(runs, args.rounds, "s/step")
    b, o = statistics.median(seconds["bare"]), statistics.median(seconds["loop"])
    print(f"threads {args.threads}, {len(seconds['bare'])} + {len(seconds['loop'])} ten-step windows")
    print(f"bare diffusers + peft loop : {1000 * b:7.2f} ms/step")
    print(f"crossattn finetune         : {1000 * o:7.2f} ms/step")
    print(f"ratio finetune / bare      : {o / b:.3f}   (target <= 1.1)")
    cpu = {"bare": [], "loop": []}
    for _ in range(args.rounds):  # CPU time: the process's own, whatever else runs
        cpu["bare"].append(statistics.median(bare_step_seconds(data, model, args.step_steps + 1, time.process_time)))
        cpu["loop"].append(loop_cpu_per_step(data, model, args.step_steps))
    b, o = statistics.median(cpu["bare"]), statistics.median(cpu["loop"])
    print(f"CPU time per step: bare {1000 * b:.2f} ms, finetune's whole loop {1000 * o:.2f} ms, ratio {o / b:.3f}")


def main() -> None:
    from crossattn.commands.finetune import LORA_STEPS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step-steps", type=int, default=100, help="steps per run of the step-cost part")
    parser.add_argument(
        "--steps", type=int, default=LORA_STEPS, help="steps of the validation-cost runs (default: %(default)s)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-validation", action="store_true", help="measure the step cost only")
    parser.add_argument("--skip-step-cost", action="store_true", help="measure the validation cost only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model, data = tiny_sd15(Path(tmp)), ring_folder(Path(tmp))
        if not args.skip_step_cost:
            step_cost(data, model, args)
        if not args.skip_validation:
            report_validation(validation_cost(data, model, args.steps, args.rounds), args.steps)


if __name__ == "__main__":
    main()
