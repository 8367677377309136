"""Counting scenes (issue 40): ``two|three|four COLOUR SHAPEs``, alone or beside one more object.

``"two red circles"`` draws two red circles; ``"three blue squares and a green triangle"`` draws a
counted group and one other object (another colour or shape than the group's); ``"a"`` stays one.
GenEval's counting category (Ghosh et al., "GenEval: An Object-Focused Framework for Evaluating
Text-to-Image Alignment", NeurIPS 2023) asks the same of a model: the right number of the right
objects. Up to five objects share a 32×32 image here, so they are drawn smaller than in the other
scenes (:data:`SIZE_COUNT`) and placed without touching (bounding circles ``GAP`` pixels apart), so
each is its own connected component and the analyzer can count them.

A counted group's colour, shape and number words all name the union of its objects' masks: that is
what ``word_masks`` holds for them (the grounding loss and the number word's grounding read it).
Counting scenes are opt-in: ``make_scene(counting=p)`` draws one with probability ``p``, and with
``p = 0`` (the default) no random number is drawn for it, so every existing seeded scene is unchanged.
"""

from __future__ import annotations

import numpy as np

from .captions import COLOURS, NUMBERS, SHAPES, CaptionSpec, check_shapes, format_caption
from .drawing import SHAPE_DRAWERS, Scene, SceneObject, composite, coverage, mask_centroid

SIZE_COUNT = (0.085, 0.11)  # object radius as a fraction of the side: five objects must fit apart at 32×32
GAP = 2.0  # pixels between bounding circles, as in two-object scenes: edges never touch
PLACE_TRIES = 200  # tries for one object's centre before the whole layout is drawn again
LAYOUT_TRIES = 500
COUNT_AND = 0.5  # share of counting scenes with one more object beside the group


def counting_spec(rng: np.random.Generator, shapes: tuple[str, ...] = SHAPES, kind: str | None = None) -> CaptionSpec:
    """A random counting layout: a group of 2–4 (one colour, one shape), and with ``kind="count_and"``
    (or, for ``kind=None``, with probability :data:`COUNT_AND`) one object of another colour or shape."""
    check_shapes(shapes)
    if kind is None:
        kind = "count_and" if rng.random() < COUNT_AND else "count"
    if kind not in ("count", "count_and"):
        raise ValueError(f"unknown counting kind {kind!r}; kinds: count, count_and")
    count = int(rng.choice(list(NUMBERS.values())))
    group = (str(rng.choice(list(COLOURS))), str(rng.choice(shapes)))
    if kind == "count":
        return CaptionSpec([group], count=count)
    single = group
    while single == group:
        single = (str(rng.choice(list(COLOURS))), str(rng.choice(shapes)))
    return CaptionSpec([group, single], relation="and", count=count)


def place_apart(rng: np.random.Generator, extents: np.ndarray, resolution: int) -> np.ndarray | None:
    """Centres (N, 2) inside the image with bounding circles ``GAP`` apart, placed one by one;
    None when an object found no room (the caller draws the layout again)."""
    centres: list[np.ndarray] = []
    for extent in extents:
        lo, hi = extent + 0.5, resolution - extent - 0.5
        for _ in range(PLACE_TRIES):
            c = rng.uniform(lo, hi, size=2)  # (xy,)
            if all(np.hypot(*(c - d)) >= extent + e + GAP for d, e in zip(centres, extents, strict=False)):
                centres.append(c)
                break
        else:
            return None
    return np.stack(centres)  # (N, 2)


def render_counting(
    rng: np.random.Generator, spec: CaptionSpec, resolution: int = 32, noise: float = 0.0, caption: str | None = None
) -> Scene:
    """The :class:`~crossattn.data.drawing.Scene` of a counting ``spec``: objects in caption order (the
    group's copies, then the single object), exact masks, group words → the union of the group's masks."""
    instances = spec.instances()
    for _ in range(LAYOUT_TRIES):
        sizes = rng.uniform(*SIZE_COUNT, size=len(instances)) * resolution
        extents = np.array([SHAPE_DRAWERS[s].extent * z for (_, s), z in zip(instances, sizes, strict=True)])
        centres = place_apart(rng, extents, resolution)
        if centres is None:
            continue
        covers = [coverage(s, tuple(c), z, resolution) for (_, s), c, z in zip(instances, centres, sizes, strict=True)]
        masks = [cov >= 0.5 for cov in covers]
        if all(m.any() for m in masks):
            break
    else:
        raise ValueError(f"could not place {len(instances)} objects apart at resolution {resolution}")
    image = composite(covers, [COLOURS[c] for c, _ in instances], rng, noise)
    objects = [
        SceneObject(c, s, m, mask_centroid(m), float(z)) for (c, s), m, z in zip(instances, masks, sizes, strict=True)
    ]
    group = np.any(masks[: spec.count], axis=0)  # (H, W): the counted group's pixels
    owners = [group, *masks[spec.count :]]  # caption object i → its pixels
    word_masks = {w: owners[i] for w, i, _ in spec.object_words()}
    word_masks[spec.number_word()] = group
    if caption is None:
        caption = format_caption(
            spec.objects, relation=spec.relation if len(spec.objects) == 2 else None, count=spec.count
        )
    return Scene(image, caption, objects, word_masks, spec.kind, None, spec.relation)
