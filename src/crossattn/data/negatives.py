"""Hard negatives for the mini-CLIP: the same caption with one fact changed, false for the scene.

Plain CLIP learns captions as bags of words; NegCLIP (Yuksekgonul et al., "When and why
vision-language models behave like bags-of-words, and what to do about it?", ICLR 2023) adds, for
every caption, the caption with its words swapped as a negative scored against the same image, and
becomes order-aware. Here the grammar of :mod:`crossattn.data.captions` says exactly which edits
make a caption false, so every negative is false by construction:

| kind       | edit                                              | applies to              |
|------------|---------------------------------------------------|-------------------------|
| ``relation`` | left of ↔ right of, above ↔ below                 | two objects, a relation |
| ``swap``     | the two objects change places                     | two objects, a relation |
| ``position`` | another position / a perpendicular relation       | a position or relation  |
| ``colour``   | one object gets another colour                    | every caption           |
| ``shape``    | one object gets another shape                     | every caption           |
| ``count``    | the group's number one up or down (two ↔ three)   | counting captions       |

(A perpendicular relation is false because the grammar makes the relation's axis dominate.)
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset

from .captions import COLOURS, KINDS, NUMBERS, POSITIONS, SHAPES, CaptionSpec, format_caption, parse_caption

NEGATIVE_KINDS = ("relation", "swap", "position", "colour", "shape")  # every kind a caption without a number takes
COUNT_NEGATIVE_KINDS = ("count", "colour", "shape")  # a counting caption's (issue 40)
STRUCTURE_KINDS = ("relation", "swap", "position", "count")  # what a bag of words cannot tell apart
ATTRIBUTE_KINDS = ("colour", "shape")
FLIPPED = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
PERPENDICULAR = {
    "left of": ("above", "below"),
    "right of": ("above", "below"),
    "above": ("left of", "right of"),
    "below": ("left of", "right of"),
}
#: the training mix of scene kinds (one, one_position, two_relation, two_and): relation-heavy, as
#: ``shared/TRIALS.md`` measured that relations bind only with enough relation signal
CLIP_KIND_MIX = (0.1, 0.2, 0.6, 0.1)


def applicable_kinds(spec: CaptionSpec) -> tuple[str, ...]:
    """The negative kinds that can make ``spec``'s caption false."""
    if spec.count > 1:
        return COUNT_NEGATIVE_KINDS
    if spec.relation is not None and spec.relation != "and":
        return NEGATIVE_KINDS
    if spec.position is not None:
        return ("position", *ATTRIBUTE_KINDS)
    return ATTRIBUTE_KINDS


def hard_negative(spec: CaptionSpec, kind: str, rng: np.random.Generator, shapes: tuple[str, ...] = SHAPES) -> str:
    """The caption of ``spec`` with one fact changed by ``kind`` (see the module table)."""
    if kind not in applicable_kinds(spec):
        raise ValueError(
            f"negative kind {kind!r} does not apply to {_caption(spec, spec.objects, spec.count)!r}; "
            f"applicable: {', '.join(applicable_kinds(spec))}"
        )
    objects, position, relation = list(spec.objects), spec.position, spec.relation
    if kind == "count":
        return _caption(spec, objects, swapped_count(spec.count, rng))
    if kind == "relation":
        relation = FLIPPED[relation]
    elif kind == "swap":
        objects = objects[::-1]
    elif kind == "position" and position is not None:
        position = str(rng.choice([p for p in POSITIONS if p != position]))
    elif kind == "position":
        relation = str(rng.choice(PERPENDICULAR[relation]))
    else:
        objects = _change_attribute(objects, 0 if kind == "colour" else 1, rng, shapes)
        return _caption(spec, objects, spec.count)
    return format_caption(objects, position, relation)


def swapped_count(count: int, rng: np.random.Generator) -> int:
    """A neighbouring count of the grammar (two ↔ three, three → two or four, four → three): the
    hardest count to tell apart from ``count``."""
    near = [n for n in NUMBERS.values() if abs(n - count) == 1]
    return int(rng.choice(near))


def _caption(spec: CaptionSpec, objects: list[tuple[str, str]], count: int) -> str:
    """The caption of ``objects`` (and a group of ``count``) in ``spec``'s position or relation."""
    return format_caption(objects, spec.position, spec.relation if len(objects) == 2 else None, count)


def _change_attribute(
    objects: list[tuple[str, str]], slot: int, rng: np.random.Generator, shapes: tuple[str, ...]
) -> list[tuple[str, str]]:
    """One object (at random) with another colour (``slot`` 0) or shape (1); the objects stay distinct."""
    index = int(rng.integers(len(objects)))
    values = list(COLOURS) if slot == 0 else list(shapes)
    choices = [v for v in values if v != objects[index][slot]]
    rng.shuffle(choices)
    for value in choices:
        changed = (value, objects[index][1]) if slot == 0 else (objects[index][0], value)
        if changed not in objects:
            return [changed if i == index else o for i, o in enumerate(objects)]
    raise ValueError(f"no other {'colour' if slot == 0 else 'shape'} keeps {objects} distinct")


def training_negatives(spec: CaptionSpec, count: int, rng: np.random.Generator) -> list[str]:
    """``count`` negatives: the first a structural one where the caption has structure (relation,
    swap or position), the rest colour or shape, so every batch carries both signals."""
    kinds = applicable_kinds(spec)
    structural = [k for k in kinds if k in STRUCTURE_KINDS]
    chosen = []
    for i in range(count):
        pool = structural if i == 0 and structural else ATTRIBUTE_KINDS
        chosen.append(hard_negative(spec, str(rng.choice(pool)), rng))
    return chosen


class ClipScenes(Dataset):
    """Scenes for contrastive training: item ``i`` is ``{"pixel_values", "text", "negatives"}``.

    Scene kinds follow ``kind_mix`` (one, one_position, two_relation, two_and); item ``i`` of seed ``s``
    draws its scene from ``default_rng((s, i))`` and its negatives from ``default_rng((s, i, 1))``.
    ``noise`` adds Gaussian pixel noise (std on the 0–1 scale) for robustness checks. ``counting`` is the
    share of counting scenes (:mod:`crossattn.data.counting`; 0, the default, draws none).
    """

    def __init__(
        self,
        length: int,
        resolution: int = 32,
        seed: int = 0,
        negatives: int = 2,
        kind_mix: tuple[float, ...] = CLIP_KIND_MIX,
        noise: float = 0.0,
        counting: float = 0.0,
    ) -> None:
        if length < 1:
            raise ValueError(f"length must be at least 1, got {length}")
        if negatives < 1:
            raise ValueError(f"negatives must be at least 1 per caption, got {negatives}")
        if len(kind_mix) != len(KINDS) or min(kind_mix) < 0 or not np.isclose(sum(kind_mix), 1.0):
            raise ValueError(
                f"kind_mix must be {len(KINDS)} non-negative shares of {KINDS} summing to 1, got {kind_mix}"
            )
        self.length, self.resolution, self.seed, self.negatives = length, resolution, seed, negatives
        if not 0.0 <= counting <= 1.0:
            raise ValueError(f"counting must be a share in [0, 1] of counting scenes, got {counting}")
        self.kind_mix, self.noise, self.counting = tuple(kind_mix), noise, counting

    def __len__(self) -> int:
        return self.length

    def scene(self, index: int):
        from .shapes import make_scene, scene_rng

        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a dataset of {self.length}")
        rng = scene_rng(self.seed, index)
        return make_scene(rng, self.resolution, None, self.noise, kind_mix=self.kind_mix, counting=self.counting)

    def __getitem__(self, index: int) -> dict:
        import torch

        scene = self.scene(index)
        rng = np.random.default_rng((self.seed, index, 1))
        negatives = training_negatives(parse_caption(scene.caption), self.negatives, rng)
        pixels = torch.from_numpy(scene.image).permute(2, 0, 1).float() / 127.5 - 1.0  # (3, H, W)
        return {"pixel_values": pixels, "text": scene.caption, "negatives": negatives}
