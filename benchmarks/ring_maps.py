"""The ring's maps after the default fine-tune (issue 39 stretch): does the new word attend to the ring, and did
the known words' maps stay where they were?

(a) ``--per-colour`` seeded ``"a {colour} ring"`` samples with base + LoRA, traced; the analyzer (which knows
rings by their hole) finds the ring; the word ``ring``'s map is compared with the ring's mask by DAAM's IoU
(min-max normalised map ≥ τ = 0.4, :func:`crossattn.evaluation.grounding.map_iou`). Acceptance: mean ≥ 0.60.
(b) The known words: ``"a {colour} {shape}"`` for the default model's shapes, one seed each; per colour and shape
word, how far its map moved (Jensen–Shannon, :func:`crossattn.training.validation.js_divergence`) between the base
model and base + LoRA at the same seed, against the noise: the same word's map between two seeds of the base
model. Acceptance: the median move ≤ the median noise.

    python benchmarks/ring_maps.py --lora /path/to/ring-run/final [--per-colour 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch
from finetune_common import load_models

from crossattn.data.captions import ALL_SHAPES, COLOURS, SHAPES, format_caption
from crossattn.evaluation.analyzer import analyze
from crossattn.evaluation.grounding import map_iou
from crossattn.training.validation import js_divergence, traced_sample

NOISE_SEED_OFFSET = 1000  # the second base seed of the noise pair


def ring_ious(tuned, per_colour: int, steps: int, guidance: float) -> tuple[list[float], int]:
    """The ring word's map IoU with the analyzer's ring mask, per sample where one ring was found; and the count."""
    ious, samples = [], 0
    for colour in COLOURS:
        for seed in range(per_colour):
            image, maps = traced_sample(tuned, format_caption([(colour, "ring")]), seed, steps, guidance)
            samples += 1
            rings = [o for o in analyze(np.asarray(image), shapes=ALL_SHAPES) if o.shape == "ring"]
            if len(rings) == 1:
                ious.append(map_iou(maps.word_map("ring"), rings[0].mask))
    return ious, samples


def known_word_moves(base, tuned, steps: int, guidance: float) -> tuple[list[float], list[float]]:
    """Per colour and shape word of ``"a {colour} {shape}"``: JS(base, tuned) at one seed, JS(base, base) across two."""
    moved, noise = [], []
    for i, (colour, shape) in enumerate((c, s) for c in COLOURS for s in SHAPES):
        prompt = format_caption([(colour, shape)])
        _, b = traced_sample(base, prompt, i, steps, guidance)
        _, t = traced_sample(tuned, prompt, i, steps, guidance)
        _, other = traced_sample(base, prompt, i + NOISE_SEED_OFFSET, steps, guidance)
        for word in (colour, shape):
            moved.append(js_divergence(b.word_map(word), t.word_map(word)))
            noise.append(js_divergence(b.word_map(word), other.word_map(word)))
    return moved, noise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lora", type=Path, required=True, help="a ring fine-tune's LoRA folder (OUT/final)")
    parser.add_argument("--model", help="base model (default: the shipped one)")
    parser.add_argument("--per-colour", type=int, default=4, help="ring samples per colour (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base, tuned = load_models(args.model, args.lora)
    ious, samples = ring_ious(tuned, args.per_colour, args.steps, args.guidance)
    mean = statistics.fmean(ious) if ious else float("nan")
    print(f"ring found in {len(ious)} of {samples} samples; ring map IoU (tau 0.4): mean {mean:.3f}  (target >= 0.60)")
    moved, noise = known_word_moves(base, tuned, args.steps, args.guidance)
    m, n = statistics.median(moved), statistics.median(noise)
    print(f"known words ({len(moved)}): median JS base->tuned {m:.4f} bits, base seed->seed noise {n:.4f} bits")
    print(f"moved / noise: {m / n:.3f}  (target <= 1)")


if __name__ == "__main__":
    main()
