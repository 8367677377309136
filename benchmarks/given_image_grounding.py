"""Grounding of a given image's word maps: denoising from it vs averaging N noise draws at one timestep.

Scenes from ``ShapesDataset`` (exact masks) are read with their own captions by
:func:`crossattn.maps_of_image` with the default model; each colour and shape word's map is scored
by DAAM's IoU (:func:`crossattn.evaluation.grounding.map_iou`, τ = 0.4) against its object's mask.
Also scored: the same words' maps of the image the model generates for the caption against the
analyzer-free baseline of a uniform map (the mask's area fraction).

    python benchmarks/given_image_grounding.py --scenes 20 --threads 1
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from PIL import Image

from crossattn.data.shapes import ShapesDataset
from crossattn.evaluation.grounding import attention_word_map, map_iou
from crossattn.models.loading import load_pipeline
from crossattn.sampling.given_image import maps_of_image


def scene_ious(pipe, scene, strength: float, samples: int | None, steps: int, seed: int) -> list[float]:
    """IoU of every colour / shape word of ``scene``'s caption, read from ``scene.image``."""
    result = maps_of_image(
        pipe,
        Image.fromarray(scene.image),
        scene.caption,
        strength=strength,
        samples=samples,
        num_inference_steps=steps,
        generator=torch.Generator().manual_seed(seed),
    )
    word_map = attention_word_map(result.maps, scene.caption, 0)
    ious = []
    for index, mask in scene.word_masks.items():
        m = word_map(index)
        if m is not None:
            ious.append(map_iou(m, mask))
    return ious


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
    data = ShapesDataset(args.scenes, seed=12345)
    scenes = [data.scene(i) for i in range(args.scenes)]
    area = np.mean([mask.mean() for s in scenes for mask in s.word_masks.values()])
    print(f"{args.scenes} scenes, {args.steps} steps; uniform-map IoU (mask area) {area:.3f}")
    print(f"{'strength':>8} {'mode':>10} {'mean IoU':>9} {'words':>6} {'s/scene':>8}")
    for strength in args.strengths:
        for samples in [None, *args.samples]:
            start = time.perf_counter()
            ious = [iou for i, s in enumerate(scenes) for iou in scene_ious(pipe, s, strength, samples, args.steps, i)]
            took = (time.perf_counter() - start) / len(scenes)
            mode = "denoise" if samples is None else f"draws x{samples}"
            print(f"{strength:>8.2f} {mode:>10} {np.mean(ious):>9.3f} {len(ious):>6} {took:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
