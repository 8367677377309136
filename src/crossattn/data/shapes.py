"""Procedural scenes with exact per-object masks: the training data and evaluation's ground truth.

A scene is one or two filled shapes from a small palette on white (or a counted group, drawn by
``counting.py``), with a caption in the grammar of ``captions.py`` and a boolean mask per object. Edges are anti-aliased by supersampling; an object's
mask is the set of pixels it covers at least half, so inside the mask the object's colour dominates
and outside every mask white does. Everything is drawn from a ``numpy.random.Generator``, so a scene
is reproducible from its seed; the dataset item ``i`` of seed ``s`` uses ``default_rng((s, i))``.

Shapes are a small dict of inside-tests (:data:`SHAPE_DRAWERS`, in ``drawing.py`` with the
coverage and compositing both scene modules use); a new shape is one more entry.
``ring`` is one such entry outside the default vocabulary (``SHAPES``): it is drawn only when a
``shapes=`` argument names it, for the fine-tuning example that teaches the model a new word.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from .captions import (
    ALL_SHAPES,
    COLOURS,
    COUNT_KINDS,
    KINDS,
    POSITIONS,
    RELATIONS,
    SHAPES,
    CaptionSpec,
    check_shapes,
    format_caption,
    margin_for,
    parse_caption,
    satisfies_position,
    satisfies_relation,
)
from .drawing import SHAPE_DRAWERS, Scene, SceneObject, coverage
from .drawing import composite as _composite
from .drawing import mask_centroid as _mask_centroid

__all__ = ["COLOURS", "SHAPES", "ALL_SHAPES", "POSITIONS", "RELATIONS", "KINDS", "SHAPE_DRAWERS", "SceneObject"]
__all__ += ["Scene", "make_scene", "scene_from_caption", "scene_rng", "render_layout", "ShapesDataset"]
__all__ += ["export_image_folder"]

SIZE_ONE = (0.12, 0.17)  # object radius as a fraction of the side, one-object scenes
SIZE_TWO = (0.10, 0.14)  # smaller when two objects must fit apart
GAP = 2.0  # pixels between the bounding circles of two objects, so edges never touch
SAFETY = 0.5  # pixels beyond the grammar's distances when placing, so measured centroids still pass
MAX_TRIES = 2000
KIND_MIX = (1 / 6, 1 / 3, 0.4, 0.1)  # shares of KINDS in the default training mix


def _place_one(rng: np.random.Generator, extent: float, resolution: int, position: str | None) -> np.ndarray:
    """A centroid keeping the shape inside the image and, if asked, at ``position`` (+ SAFETY)."""
    lo, hi = np.full(2, extent + 0.5), np.full(2, resolution - extent - 0.5)
    mid, m = resolution / 2, margin_for(resolution) + SAFETY
    if position == "center":
        lo, hi = np.maximum(lo, mid - m + 2 * SAFETY), np.minimum(hi, mid + m - 2 * SAFETY)
    elif position is not None:
        vertical, horizontal = position.split()
        for axis, low_side in ((0, horizontal == "left"), (1, vertical == "top")):
            if low_side:
                hi[axis] = min(hi[axis], mid - m)
            else:
                lo[axis] = max(lo[axis], mid + m)
    if np.any(hi < lo):
        raise ValueError(f"resolution {resolution} is too small to place an object at the {position}")
    return rng.uniform(lo, hi)


def _place_two(rng: np.random.Generator, extents: tuple[float, float], resolution: int, relation: str) -> np.ndarray:
    """Two centroids, (2, 2), inside the image, bounding circles GAP apart, satisfying the relation."""
    lo = np.array([[e + 0.5] * 2 for e in extents])
    hi = resolution - lo
    for _ in range(MAX_TRIES):
        c = rng.uniform(lo, hi)  # (2 objects, xy)
        if np.hypot(*(c[0] - c[1])) < extents[0] + extents[1] + GAP:
            continue
        if satisfies_relation(tuple(c[0]), tuple(c[1]), relation, resolution, slack=-SAFETY):
            return c
    raise ValueError(f"could not place two objects '{relation}' at resolution {resolution}")


def render_layout(
    rng: np.random.Generator, spec: CaptionSpec, resolution: int = 32, noise: float = 0.0, caption: str | None = None
) -> Scene:
    """Draw the objects of ``spec`` at random sizes and places that satisfy its position/relation.

    Placements are re-drawn (rarely) until the measured mask centroids obey the grammar too.
    ``noise`` is the std of Gaussian pixel noise on the 0–1 scale (e.g. 8/255). Counting specs
    (``spec.count > 1``) are drawn by :func:`crossattn.data.counting.render_counting`.
    """
    if spec.count > 1:
        from .counting import render_counting

        return render_counting(rng, spec, resolution, noise, caption)
    n = len(spec.objects)
    size_range = SIZE_ONE if n == 1 else SIZE_TWO
    for _ in range(MAX_TRIES):
        sizes = rng.uniform(*size_range, size=n) * resolution
        extents = tuple(SHAPE_DRAWERS[s].extent * z for (_, s), z in zip(spec.objects, sizes, strict=True))
        if n == 1:
            centres = _place_one(rng, extents[0], resolution, spec.position)[None]
        else:
            centres = _place_two(rng, extents, resolution, spec.relation or "and")
        covers = [
            coverage(s, tuple(c), z, resolution) for (_, s), c, z in zip(spec.objects, centres, sizes, strict=True)
        ]
        masks = [cov >= 0.5 for cov in covers]
        if all(m.any() for m in masks) and _obeys(spec, [_mask_centroid(m) for m in masks], resolution):
            break
    else:
        raise ValueError(f"could not draw {spec.objects} at resolution {resolution}")
    image = _composite(covers, [COLOURS[c] for c, _ in spec.objects], rng, noise)
    objects = [
        SceneObject(c, s, m, _mask_centroid(m), float(z))
        for (c, s), m, z in zip(spec.objects, masks, sizes, strict=True)
    ]
    caption = caption if caption is not None else format_caption(spec.objects, spec.position, spec.relation)
    word_masks = {w: objects[i].mask for w, i, _ in spec.object_words()}
    return Scene(image, caption, objects, word_masks, spec.kind, spec.position, spec.relation)


def _obeys(spec: CaptionSpec, centroids: list[tuple[float, float]], resolution: int) -> bool:
    if spec.position is not None:
        return satisfies_position(centroids[0], spec.position, resolution)
    if len(centroids) == 2:
        return satisfies_relation(centroids[0], centroids[1], spec.relation or "and", resolution)
    return True


def random_spec(
    rng: np.random.Generator,
    kind: str | None = None,
    shapes: tuple[str, ...] = SHAPES,
    kind_mix: tuple[float, ...] | None = None,
) -> CaptionSpec:
    """A random layout. ``kind=None`` draws a kind with the shares ``kind_mix`` of :data:`KINDS`, by
    default the training mix :data:`KIND_MIX`: half one-object (two thirds of them with a position),
    half two-object (the five relations equally)."""
    if kind is None:
        kind = str(rng.choice(KINDS, p=list(kind_mix or KIND_MIX)))
    if kind not in KINDS:
        raise ValueError(f"unknown scene kind {kind!r}; kinds: {', '.join(KINDS)}")
    check_shapes(shapes)
    colours = list(COLOURS)
    first = (str(rng.choice(colours)), str(rng.choice(shapes)))
    if kind == "one":
        return CaptionSpec([first])
    if kind == "one_position":
        return CaptionSpec([first], position=str(rng.choice(POSITIONS)))
    second = first
    while second == first:  # the two objects differ in colour or shape
        second = (str(rng.choice(colours)), str(rng.choice(shapes)))
    relation = "and" if kind == "two_and" else str(rng.choice(RELATIONS[:4]))
    return CaptionSpec([first, second], relation=relation)


def make_scene(
    rng: np.random.Generator,
    resolution: int = 32,
    kind: str | None = None,
    noise: float = 0.0,
    shapes: tuple[str, ...] = SHAPES,
    kind_mix: tuple[float, ...] | None = None,
    counting: float = 0.0,
) -> Scene:
    """A random scene of ``kind`` ("one", "one_position", "two_relation", "two_and", the counting kinds
    "count", "count_and"; None = drawn from ``kind_mix``, default :data:`KIND_MIX`). With ``kind=None`` and ``counting`` > 0 a counting scene
    (:mod:`crossattn.data.counting`) comes with that probability instead; 0 draws nothing for it."""
    if kind in COUNT_KINDS or (kind is None and counting > 0 and rng.random() < counting):
        from .counting import counting_spec

        return render_layout(rng, counting_spec(rng, shapes, kind), resolution, noise)
    return render_layout(rng, random_spec(rng, kind, shapes, kind_mix), resolution, noise)


def scene_from_caption(caption: str, rng: np.random.Generator, resolution: int = 32, noise: float = 0.0) -> Scene:
    """Render a scene for a given caption (a ``ValueError`` naming the vocabulary if it is outside it)."""
    spec = parse_caption(caption, shapes=ALL_SHAPES)
    if len(spec.objects) == 2 and spec.objects[0] == spec.objects[1]:
        raise ValueError(f"caption {caption!r}: the two objects must differ in colour or shape")
    return render_layout(rng, spec, resolution, noise, caption=caption)


def scene_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of item ``index`` of a seeded set: independent of every other item."""
    return np.random.default_rng((seed, index))


class ShapesDataset(Dataset):
    """``length`` seeded scenes: item ``i`` is ``{"pixel_values": (3, H, W) float in [-1, 1], "text"}``,
    plus ``"word_masks"`` ``(words, H, W)`` uint8 with ``with_masks`` (for the grounding loss): the
    colour and shape words' objects, and with ``position_masks`` also the position words' (the
    place a one-object caption names is where its object is: attention supervision of *where*).
    ``counting`` is the share of counting scenes (0: none, the mix of every existing recipe)."""

    def __init__(
        self,
        length: int,
        resolution: int = 32,
        seed: int = 0,
        noise: float = 0.0,
        kind: str | None = None,
        shapes: tuple[str, ...] = SHAPES,
        with_masks: bool = False,
        kind_mix: tuple[float, ...] | None = None,
        position_masks: bool = False,
        counting: float = 0.0,
    ) -> None:
        if length < 1:
            raise ValueError(f"length must be at least 1, got {length}")
        if not 0.0 <= counting <= 1.0:
            raise ValueError(f"counting must be a share in [0, 1] of counting scenes, got {counting}")
        self.length, self.resolution, self.seed, self.noise = length, resolution, seed, noise
        self.kind, self.shapes, self.with_masks = kind, check_shapes(shapes), with_masks
        self.kind_mix, self.position_masks, self.counting = kind_mix, position_masks, counting

    def __len__(self) -> int:
        return self.length

    def scene(self, index: int) -> Scene:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a dataset of {self.length}")
        rng = scene_rng(self.seed, index)
        return make_scene(rng, self.resolution, self.kind, self.noise, self.shapes, self.kind_mix, self.counting)

    def __getitem__(self, index: int) -> dict:
        import torch

        scene = self.scene(index)
        pixels = torch.from_numpy(scene.image).permute(2, 0, 1).float() / 127.5 - 1.0  # (3, H, W)
        item = {"pixel_values": pixels, "text": scene.caption}
        if self.with_masks:  # (words, H, W): word i's object mask, zeros for words naming no object
            words = np.zeros((len(scene.caption.split()), *scene.image.shape[:2]), np.uint8)
            for i, mask in scene.word_masks.items():
                words[i] = mask
            if self.position_masks and scene.position is not None:  # "... at the top left": the object's place
                words[-len(scene.position.split()) :] = scene.objects[0].mask
            item["word_masks"] = torch.from_numpy(words)
        return item


def export_image_folder(
    out_dir: str | Path,
    n: int,
    seed: int = 0,
    resolution: int = 32,
    kind: str | None = None,
    shapes: tuple[str, ...] = SHAPES,
    prior: int = 0,
    prior_shapes: tuple[str, ...] = SHAPES,
) -> Path:
    """Write ``n`` scenes as ``NNNNN.png`` + ``metadata.jsonl`` (``file_name``, ``text``) + ``masks.npz``
    (file name → (objects, H, W) bool, in caption order), atomically; an existing non-empty folder
    is refused. Scene ``i`` is item ``i`` of ``ShapesDataset(n, resolution, seed, kind=kind, shapes=shapes)``.

    ``prior`` more scenes of the default shapes follow (DreamBooth's prior preservation, by example):
    teaching a new shape from its images alone lets it take over a similar known one (rings replaced
    a fifth of the circles, squares and triangles in the ring example); a few scenes of what the model
    already draws keep the words apart. ``prior_shapes`` picks which known shapes those scenes show:
    DreamBooth's class prior is the class the new concept is confused with (circles, for rings)."""
    from .folder import new_image_folder

    check_shapes(shapes)
    check_shapes(prior_shapes)
    if prior < 0:
        raise ValueError(f"prior must be >= 0 scenes, got {prior}")
    masks = {}
    with new_image_folder(out_dir) as folder:
        for i in range(n + prior):
            drawn = shapes if i < n else prior_shapes
            scene = make_scene(scene_rng(seed, i), resolution, kind, shapes=drawn)
            name = folder.add(scene.image, scene.caption)
            masks[name] = np.stack([o.mask for o in scene.objects])  # (objects, H, W)
        np.savez_compressed(folder.folder / "masks.npz", **masks)
    return Path(out_dir)
