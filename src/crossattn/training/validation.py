"""Validation maps: where each word of a validation prompt attends, under the weights being trained and
under the base model, with the same seed, drawn side by side while fine-tuning runs.

No trainer shows this (kohya-ss/sd-scripts #949, custom-diffusion #54 / #70 asked): a new word can learn
to draw its object while its map stays diffuse, or a known word's map can drift away from its object.
At every validation (``every`` steps and the last), for each prompt:

```
OUT/validation/base/<slug>-<seed>.png + .maps.safetensors/.maps.json/.maps.png   the base model, drawn once
OUT/validation/step-NNNNNN/<slug>-<seed>.png + .maps.safetensors/.maps.json         the current (EMA) weights
OUT/validation/step-NNNNNN/<slug>-<seed>.compare.png                              base row over tuned row (PIL)
OUT/validation/metrics.json, metrics.csv (each validation), metrics.png (the last)  two numbers per word, per step
```

Two numbers per word (:mod:`crossattn.attention.movement`, which says why these): **moved**, the Jensen–Shannon
divergence (bits) of its map from the base model's, and **concentration**, its mass in its top 10 % of pixels;
``crossattn maps --lora DIR --compare-base`` and the explorer give the same numbers.

The base model's maps depend on nothing that trains, so they are drawn once, at step 0 from the
starting weights (a LoRA's ``B`` and the new words' row deltas start at zero, so those *are* the base
model), saved, and read back on ``--resume``; every later validation costs one traced sample per prompt.
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

# js_divergence and top_share: benchmarks/ring_maps.py and tests import them from here
from ..attention.movement import TOP_SHARE, js_divergence, top_share, word_numbers  # noqa: F401
from ..config import SamplingConfig
from ..errors import BadArgument

MAP_NUMBERS = ("moved", "concentration")  # what each metrics row gives per word (and the base's concentration)


@dataclass(frozen=True)
class ValidationSettings:
    """What is drawn at each validation: ``prompts`` with one ``seed``, every ``every`` steps (and the last)."""

    prompts: tuple[str, ...]
    every: int
    seed: int = SamplingConfig.seed
    steps: int = SamplingConfig.steps  # sampling steps of each validation image
    guidance: float = SamplingConfig.guidance_scale

    def __post_init__(self) -> None:
        if self.every < 1:
            raise BadArgument(f"validation every {self.every} steps: must be at least 1")
        if not self.prompts or not all(p.strip() for p in self.prompts):
            raise BadArgument(f"validation prompts must be non-empty text, got {list(self.prompts)}")


def traced_sample(pipe, prompt: str, seed: int, steps: int, guidance: float):
    """One image of ``prompt`` (seed ``seed``) and its cross-attention maps."""
    from ..attention.trace import trace

    with trace(pipe) as tracer:
        image = pipe(
            [prompt],
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=[torch.Generator(device="cpu").manual_seed(seed)],
        ).images[0]
    return image, tracer.maps()


def compare_grid(base, base_image, tuned, tuned_image, words: list[str]):
    """:func:`crossattn.sampling.compare.compare_figure` without matplotlib, for validation during training (a PIL image, milliseconds
    instead of ~1 s a figure): the same two rows (base, tuned) of the image and each word's overlay, each
    panel scaled to its own maximum; the numbers are in ``metrics.csv``. Small images are upscaled to ≥ 128 px."""
    from .. import viz
    from .train_outputs import image_grid

    scale = max(1, 128 // max(base_image.size))
    tiles = []
    for maps, image in ((base, base_image), (tuned, tuned_image)):
        frames = [viz.heat_frame(maps.word_map(w), image, scale=scale) for w in words]
        tiles += [image.convert("RGB").resize(frames[0].size, 0), *frames]  # 0: nearest
    return image_grid(tiles, 2, len(words) + 1)


def write_maps_files(maps, image, png: Path, meta: dict, row: bool = True) -> list[Path]:
    """The image and its maps in the files ``crossattn maps`` writes (``.png``, ``.maps.safetensors``,
    ``.maps.json``, and with ``row`` the overlays ``.maps.png``)."""
    from .. import viz
    from ..files import atomic_write

    maps.meta["sampling"] = meta
    written = [atomic_write(png, lambda tmp: image.save(tmp, format="PNG"))]
    written += list(maps.save(png.with_suffix(".maps.safetensors")))
    if row:
        written.append(viz.save_figure(viz.word_row(maps, [image]), png.with_suffix(".maps.png")))
    return written


@dataclass
class Validation:
    """Draws the validation maps into ``root`` (``OUT/validation``); :class:`crossattn.training.train.Trainer`
    calls :meth:`start` once before its first step and :meth:`run` when :meth:`due`."""

    settings: ValidationSettings
    root: Path
    base: dict[str, tuple] = field(default_factory=dict)  # prompt → (image, maps) of the base model
    rows: list[dict] = field(default_factory=list)  # metrics so far
    enabled: bool = True
    last: bool = False  # whether the validation :meth:`due` last said yes to is the session's last (plots then)

    def stem(self, folder: Path, prompt: str) -> Path:
        from ..files import slugify

        return folder / f"{slugify(prompt)}-{self.settings.seed}.png"

    def due(self, step: int, last: bool) -> bool:
        self.last = last
        return self.enabled and (step % self.settings.every == 0 or last)

    def start(self, pipe, step: int) -> list[dict]:
        """The base maps: drawn now from the starting weights (step 0; returns their rows), or read back (a
        resumed run; returns none)."""
        from PIL import Image

        from ..attention.maps import AttentionMaps

        folder = self.root / "base"
        if step == 0:
            for prompt in self.settings.prompts:
                image, maps = traced_sample(
                    pipe, prompt, self.settings.seed, self.settings.steps, self.settings.guidance
                )
                write_maps_files(maps, image, self.stem(folder, prompt), self.meta(prompt, 0))
                self.base[prompt] = (image, maps)
            self.rows = [r for p, (_, m) in self.base.items() for r in self.metric_rows(0, p, m, m)]
            self.write_metrics()
            return self.rows
        stems = [self.stem(folder, p) for p in self.settings.prompts]
        if not all(s.with_suffix(".maps.safetensors").is_file() for s in stems):
            warnings.warn(
                "no base maps in OUT/validation/base (the run started without validation): none drawn", stacklevel=3
            )
            self.enabled = False
            return []
        for prompt, stem in zip(self.settings.prompts, stems, strict=True):
            with Image.open(stem) as image:
                self.base[prompt] = (image.convert("RGB"), AttentionMaps.load(stem.with_suffix(".maps.safetensors")))
        previous = self.root / "metrics.json"
        rows = json.loads(previous.read_text(encoding="utf-8")) if previous.is_file() else []
        self.rows = [r for r in rows if r["step"] <= step]  # a resumed run redraws what came after its checkpoint
        return []

    def meta(self, prompt: str, step: int) -> dict:
        s = self.settings
        return {"prompt": prompt, "seed": s.seed, "steps": s.steps, "guidance_scale": s.guidance, "train_step": step}

    def metric_rows(self, step: int, prompt: str, base, tuned) -> list[dict]:
        numbers = word_numbers(base, tuned, base.words)
        return [{"step": step, "prompt": prompt, "word": w, **n} for w, n in numbers.items()]

    def run(self, pipe, step: int) -> list[dict]:
        """Draw each prompt under the current weights, beside the base model's, and update the metrics;
        returns this step's rows. The tuned overlays are drawn once, in ``.compare.png`` (:func:`compare_grid`,
        no ``.maps.png``), and ``metrics.png`` at the session's last validation: matplotlib figures cost more than
        the traced sample (0.5–0.9 s each against 0.65 s on the tiny SD-1.5)."""
        from ..files import atomic_write

        folder = self.root / f"step-{step:06d}"
        self.rows = [r for r in self.rows if r["step"] != step]
        for prompt in self.settings.prompts:
            image, maps = traced_sample(pipe, prompt, self.settings.seed, self.settings.steps, self.settings.guidance)
            png = self.stem(folder, prompt)
            write_maps_files(maps, image, png, self.meta(prompt, step), row=False)
            base_image, base_maps = self.base[prompt]
            rows = self.metric_rows(step, prompt, base_maps, maps)
            self.rows += rows
            grid = compare_grid(base_maps, base_image, maps, image, base_maps.words)
            atomic_write(png.with_suffix(".compare.png"), lambda tmp, grid=grid: grid.save(tmp, format="PNG"))
        self.write_metrics(plot=self.last)
        return [r for r in self.rows if r["step"] == step]

    def log(self, accelerator, rows: list[dict], step: int) -> None:
        """The rows' numbers to accelerate's trackers (``maps/<prompt>/<word>/moved``), and on TensorBoard the
        step's comparison figures as images."""
        accelerator.log({f"maps/{r['prompt']}/{r['word']}/{k}": r[k] for r in rows for k in MAP_NUMBERS}, step=step)
        if "tensorboard" not in [t.name for t in accelerator.trackers] or not rows:
            return
        import numpy as np
        from PIL import Image

        writer = accelerator.get_tracker("tensorboard", unwrap=True)
        for prompt in self.settings.prompts:
            figure = self.stem(self.root / f"step-{step:06d}", prompt).with_suffix(".compare.png")
            if figure.is_file():
                with Image.open(figure) as image:
                    pixels = np.asarray(image.convert("RGB"))  # (H, W, 3)
                writer.add_image(f"maps/{prompt}", pixels, step, dataformats="HWC")

    def write_metrics(self, plot: bool = False) -> None:
        """``metrics.json`` and ``metrics.csv`` (one row per step, prompt and word), and with ``plot`` ``metrics.png``."""
        from ..files import atomic_write, atomic_write_json

        rows = sorted(self.rows, key=lambda r: (r["step"], r["prompt"]))
        atomic_write_json(self.root / "metrics.json", rows)
        text = io.StringIO()
        writer = csv.DictWriter(
            text, fieldnames=["step", "prompt", "word", "moved", "concentration", "base_concentration"]
        )
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.root / "metrics.csv", lambda tmp: tmp.write_text(text.getvalue(), encoding="utf-8"))
        if plot:
            plot_metrics(rows, self.root / "metrics.png")


def plot_metrics(rows: list[dict], path: Path) -> Path:
    """Each word's ``moved`` and ``concentration`` over the steps, one line per (prompt, word)."""
    from .. import viz

    fig, axes = viz.figure(1, 2, size=3.2)
    series: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        series.setdefault((r["prompt"], r["word"]), []).append(r)
    many = len({p for p, _ in series}) > 1
    for (prompt, word), points in series.items():
        label = f"{word} ({prompt})" if many else word
        for ax, key in zip(axes[0], ("moved", "concentration"), strict=True):
            ax.plot([p["step"] for p in points], [p[key] for p in points], marker="o", label=label)
    axes[0][0].set_title("moved from the base map (JS, bits)", fontsize=9)
    axes[0][1].set_title(f"concentration (mass in top {TOP_SHARE:.0%} px)", fontsize=9)
    for ax in axes[0]:
        ax.set_xlabel("step", fontsize=8)
    axes[0][1].legend(fontsize=7)
    fig.tight_layout()
    return viz.save_figure(fig, path)
