"""Grounding of a given image's word maps: denoising from it vs averaging N noise draws at one timestep.

Scenes from ``ShapesDataset`` (exact masks) are read with their own captions by
:func:`crossattn.maps_of_image` with the default model, drawn two ways: *export* (the scene renderer,
what ``crossattn export`` writes, 32×32) and *pillow* (the same objects redrawn with Pillow at 64×64
with outlines, ``pillow_scenes.py``). Each colour and shape word's map is scored against its object's
mask by DAAM's IoU (:func:`crossattn.evaluation.grounding.map_iou`, τ = 0.4) and by the pointing game
(the map's peak inside the object). Bars (issue 25): IoU ≥ 0.75, pointing game ≥ 0.95.

    python benchmarks/given_image_grounding.py --scenes 100 --strengths 0.5 --samples 8 --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from pillow_scenes import pillow_scene, word_masks  # noqa: E402

from crossattn.data.shapes import ShapesDataset  # noqa: E402
from crossattn.evaluation.grounding import attention_word_map, map_iou, to_numpy  # noqa: E402
from crossattn.models.loading import load_pipeline  # noqa: E402
from crossattn.sampling.given_image import maps_of_image  # noqa: E402


def scene_scores(pipe, image, caption: str, masks: dict, strength: float, samples: int | None, steps: int, seed: int):
    """``[(IoU, peak inside)]`` for every colour / shape word of ``caption`` read from ``image``."""
    result = maps_of_image(
        pipe,
        image,
        caption,
        strength=strength,
        samples=samples,
        num_inference_steps=steps,
        generator=torch.Generator().manual_seed(seed),
    )
    word_map = attention_word_map(result.maps, caption, 0)
    scores = []
    for index, mask in masks.items():
        m = word_map(index)
        if m is not None:
            peak = np.unravel_index(np.argmax(to_numpy(m)), mask.shape)  # (row, col)
            scores.append((map_iou(m, mask), bool(mask[peak])))
    return scores


def drawn_scenes(n: int) -> dict[str, list[tuple]]:
    """``{"export": [(image, caption, word masks)], "pillow": [...]}`` of ``n`` seeded scenes."""
    data = ShapesDataset(n, seed=12345)
    rng = np.random.default_rng(0)
    out = {"export": [], "pillow": []}
    for i in range(n):
        scene = data.scene(i)
        out["export"].append((Image.fromarray(scene.image), scene.caption, scene.word_masks))
        image, masks = pillow_scene(scene, rng)
        out["pillow"].append((image, scene.caption, word_masks(scene, masks)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=20)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.3, 0.5, 0.8])
    parser.add_argument("--samples", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    pipe = load_pipeline()
    pipe.set_progress_bar_config(disable=True)
    drawn = drawn_scenes(args.scenes)
    print(f"{args.scenes} scenes, {args.steps} steps")
    print(f"{'drawn':>6} {'strength':>8} {'mode':>10} {'mean IoU':>9} {'pointing':>9} {'words':>6} {'s/scene':>8}")
    for strength in args.strengths:
        for samples in [None, *args.samples]:
            for kind, scenes in drawn.items():
                start = time.perf_counter()
                scores = [
                    score
                    for i, (image, caption, masks) in enumerate(scenes)
                    for score in scene_scores(pipe, image, caption, masks, strength, samples, args.steps, i)
                ]
                took = (time.perf_counter() - start) / len(scenes)
                mode = "denoise" if samples is None else f"draws x{samples}"
                iou, hit = np.mean([s[0] for s in scores]), np.mean([s[1] for s in scores])
                print(
                    f"{kind:>6} {strength:>8.2f} {mode:>10} {iou:>9.3f} {hit:>9.3f} {len(scores):>6} {took:>8.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
