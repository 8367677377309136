"""Drawing primitives of the procedural scenes: shape inside-tests, anti-aliased coverage, compositing.

Shared by :mod:`crossattn.data.shapes` (one- and two-object scenes) and :mod:`crossattn.data.counting`
(counted groups), and by the analyzer's template fit. Edges are anti-aliased by supersampling; an
object's mask is the set of pixels it covers at least half (see :mod:`crossattn.data.shapes`).

Shapes are a small dict of inside-tests (:data:`SHAPE_DRAWERS`); a new shape is one more entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .captions import BACKGROUND

SUPERSAMPLE = 4  # sub-samples per pixel side for anti-aliasing


class ShapeDrawer(NamedTuple):
    """``inside(x, y, size)`` with x, y relative to the shape's centroid (pixels, y down), the
    radius of its bounding circle as a multiple of ``size``, and its rotational symmetry in degrees
    (0: any angle), which tells the analyzer which rotations to try."""

    inside: Callable[[np.ndarray, np.ndarray, float], np.ndarray]
    extent: float
    symmetry: float = 360.0


SQUARE_HALF = 0.85  # half-side / size: similar area to the circle
TRIANGLE_R = 1.25  # circumradius / size
SQRT3_2 = np.sqrt(3) / 2
RING_INNER = 0.5  # hole radius / outer radius: at 32×32 a one-object ring's hole is 4–5 px across


def _circle(x: np.ndarray, y: np.ndarray, size: float) -> np.ndarray:
    return x * x + y * y <= size * size


def _square(x: np.ndarray, y: np.ndarray, size: float) -> np.ndarray:
    h = SQUARE_HALF * size
    return (np.abs(x) <= h) & (np.abs(y) <= h)


def _triangle(x: np.ndarray, y: np.ndarray, size: float) -> np.ndarray:
    """Equilateral, apex up, centroid at the origin: three half-planes at the inradius R/2."""
    r_in = TRIANGLE_R * size / 2
    return (y <= r_in) & (SQRT3_2 * x - 0.5 * y <= r_in) & (-SQRT3_2 * x - 0.5 * y <= r_in)


def _ring(x: np.ndarray, y: np.ndarray, size: float) -> np.ndarray:
    """A circle of radius ``size`` with a concentric hole of radius ``RING_INNER * size``."""
    r2 = x * x + y * y
    return (r2 <= size * size) & (r2 >= (RING_INNER * size) ** 2)


SHAPE_DRAWERS: dict[str, ShapeDrawer] = {
    "circle": ShapeDrawer(_circle, 1.0, 0.0),
    "square": ShapeDrawer(_square, SQUARE_HALF * np.sqrt(2), 90.0),
    "triangle": ShapeDrawer(_triangle, TRIANGLE_R, 120.0),
    "ring": ShapeDrawer(_ring, 1.0, 0.0),
}


@dataclass
class SceneObject:
    colour: str
    shape: str
    mask: np.ndarray  # (H, W) bool: pixels the object covers at least half
    centroid: tuple[float, float]  # (x, y) pixels, centroid of the mask
    size: float = 0.0  # radius scale in pixels (see SHAPE_DRAWERS)


@dataclass
class Scene:
    image: np.ndarray  # (H, W, 3) uint8
    caption: str
    objects: list[SceneObject]
    word_masks: dict[int, np.ndarray]  # word index in caption.split() → that object's (H, W) mask
    kind: str = "one"
    position: str | None = None
    relation: str | None = None


def coverage(shape: str, centre: tuple[float, float], size: float, resolution: int, angle: float = 0.0) -> np.ndarray:
    """Fraction of each pixel inside the shape, (H, W) float32, by SUPERSAMPLE² sub-samples.

    Only the shape's bounding box is sampled, so the cost does not grow with the image.
    ``angle`` (radians, counter-clockwise on screen) rotates the shape about its centroid.
    """
    drawer = shape_drawer(shape)
    out = np.zeros((resolution, resolution), np.float32)
    r = drawer.extent * size
    x0, x1 = max(int(np.floor(centre[0] - r)), 0), min(int(np.ceil(centre[0] + r)), resolution)
    y0, y1 = max(int(np.floor(centre[1] - r)), 0), min(int(np.ceil(centre[1] + r)), resolution)
    if x1 <= x0 or y1 <= y0:
        return out
    sub = (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE
    xs = (np.arange(x0, x1)[:, None] + sub).ravel() - centre[0]  # (w*S,)
    ys = (np.arange(y0, y1)[:, None] + sub).ravel() - centre[1]  # (h*S,)
    x, y = xs[None, :], ys[:, None]
    if angle:
        c, s = np.cos(angle), np.sin(angle)
        x, y = c * x - s * y, s * x + c * y  # (h*S, w*S): screen-CCW rotation with y pointing down
    inside = drawer.inside(x, y, size)  # (h*S, w*S)
    h, w = y1 - y0, x1 - x0
    out[y0:y1, x0:x1] = inside.reshape(h, SUPERSAMPLE, w, SUPERSAMPLE).mean(axis=(1, 3))
    return out


def shape_drawer(shape: str) -> ShapeDrawer:
    if shape not in SHAPE_DRAWERS:
        raise ValueError(f"unknown shape {shape!r}; shapes: {', '.join(SHAPE_DRAWERS)}")
    return SHAPE_DRAWERS[shape]


def mask_centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.mean() + 0.5), float(ys.mean() + 0.5)


def composite(covers: list[np.ndarray], colours: list, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Alpha-composite each coverage map in its colour over white → (H, W, 3) uint8."""
    image = np.empty((*covers[0].shape, 3), np.float32)
    image[:] = BACKGROUND
    for cov, colour in zip(covers, colours, strict=True):
        a = cov[..., None]  # (H, W, 1)
        image += a * (np.asarray(colour, np.float32) - image)
    if noise > 0:
        image += rng.normal(0.0, noise * 255.0, size=image.shape).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
