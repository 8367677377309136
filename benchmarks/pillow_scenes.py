"""Scenes drawn with Pillow instead of the scene renderer: other sizes, outlines, another rasteriser.

``pillow_scene(scene, rng)`` redraws an export scene's objects (``crossattn.data.shapes``) with
``ImageDraw`` at 64×64 by default, each with a darker outline 1–3 px wide, at the scene's places, and
gives each object's exact mask at the model's 32×32: the object drawn alone, resized as the model
resizes a given image (``resize_center_crop``, bicubic), covered at least half. The benchmarks of
given images (``given_image_grounding.py``, ``given_image_edit.py``) read these besides the export scenes.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from crossattn.data.captions import COLOURS
from crossattn.data.folder import resize_center_crop


def draw_object(draw: ImageDraw.ImageDraw, obj, k: float, fill, outline, width: int) -> None:
    """One object at ``k`` times the scene's scale: circle, square or (upright) triangle."""
    x, y = obj.centroid[0] * k, obj.centroid[1] * k
    r = max(obj.size, 3.0) * k
    if obj.shape == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill, outline=outline, width=width)
    elif obj.shape == "square":
        s = r * 0.85
        draw.rectangle((x - s, y - s, x + s, y + s), fill=fill, outline=outline, width=width)
    else:
        draw.polygon([(x, y - r), (x + r, y + r * 0.8), (x - r, y + r * 0.8)], fill=fill, outline=outline, width=width)


def pillow_scene(scene, rng: np.random.Generator, size: int = 64) -> tuple[Image.Image, list[np.ndarray]]:
    """``(image at size×size, [mask (32, 32) bool per object of scene.objects]``)."""
    resolution = scene.image.shape[0]
    k = size / resolution
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    masks = []
    for obj in scene.objects:
        fill = COLOURS[obj.colour]
        width = int(rng.integers(1, 4))
        draw_object(draw, obj, k, fill, tuple(int(c * 0.6) for c in fill), width)
        alone = Image.new("L", (size, size), 0)
        draw_object(ImageDraw.Draw(alone), obj, k, 255, 255, width)
        masks.append(np.asarray(resize_center_crop(alone, resolution)) >= 128)  # (32, 32) covered at least half
    return image, masks


def word_masks(scene, masks: list[np.ndarray]) -> dict[int, np.ndarray]:
    """The caption's word index → that word's object's Pillow mask (the scene's word → object pairing)."""
    out = {}
    for index, mask in scene.word_masks.items():
        obj = next(i for i, o in enumerate(scene.objects) if np.array_equal(o.mask, mask))
        out[index] = masks[obj]
    return out
