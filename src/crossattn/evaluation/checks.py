"""Does an analysed image show what its caption asks for? GenEval-style categories.

One-object captions are judged on the largest object found ("main"): ``colour``, ``shape``,
``object`` (both), ``count`` (exactly one object), and for positional captions ``position`` (the
main object's centroid obeys the scenes grammar's rule, whatever its colour or shape).
Two-object captions: ``both`` (two distinct objects with the asked colour and shape each, i.e.
colour attribution right), ``count`` (exactly two objects), and for the four directional relations
``relation`` (both found and their centroids obey the rule). Counting captions (issue 40,
"two red circles [and a blue square]"): ``counting`` (exactly the number asked of objects with the
group's colour and shape, and the single object found), the GenEval counting category.
``exact``, for every caption: nothing drawn but what the caption names, i.e. as many objects found
as it names and each of them one it names (a duplicated or extra object fails it, where ``both``
and ``counting`` may still pass). ``all``: every check of the caption.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..data.captions import (
    CaptionSpec,
    format_caption,
    parse_caption,
    satisfies_position,
    satisfies_relation,
    vocabulary_with,
)
from ..data.shapes import SHAPES
from .analyzer import DetectedObject, analyze


@dataclass
class CaptionCheck:
    caption: str
    kind: str
    results: dict[str, bool]  # category → passed
    matches: list[int | None]  # caption object i → index into `objects` (None: not found)
    objects: list[DetectedObject]
    spec: CaptionSpec
    group: list[int] = field(default_factory=list)  # counting captions: the detections of the counted group

    @property
    def passed(self) -> bool:
        return self.results["all"]

    def seen(self) -> str:
        """What the analyzer saw, one line."""
        return "; ".join(o.describe() for o in self.objects) or "nothing"

    def to_dict(self) -> dict:
        return {
            "caption": self.caption,
            "kind": self.kind,
            "results": self.results,
            "matches": self.matches,
            **({"group": self.group} if self.spec.count > 1 else {}),
            "seen": [
                {
                    "colour": o.colour,
                    "shape": o.shape,
                    "centroid": [round(c, 2) for c in o.centroid],
                    "area": round(o.area, 1),
                }
                for o in self.objects
            ],
        }


def match_objects(spec: CaptionSpec, objects: list[DetectedObject], resolution: int) -> list[int | None]:
    """Assign distinct detections to the caption's objects by colour and shape; among several
    assignments prefer one that satisfies the relation, then the largest objects."""
    fits = [[i for i, o in enumerate(objects) if (o.colour, o.shape) == want] for want in spec.objects]
    pairs = [(a, b) for a in fits[0] for b in fits[-1] if a != b]
    if len(spec.objects) == 1 or not pairs:  # the two objects differ, so their fits never share a detection
        return [f[0] if f else None for f in fits]
    rel = spec.relation or "and"
    good = [p for p in pairs if satisfies_relation(objects[p[0]].centroid, objects[p[1]].centroid, rel, resolution)]
    return list((good or pairs)[0])


def group_members(spec: CaptionSpec, objects: list[DetectedObject]) -> list[int]:
    """The detections with the counted group's colour and shape (none for a caption that counts nothing)."""
    return [i for i, o in enumerate(objects) if (o.colour, o.shape) == spec.objects[0]] if spec.count > 1 else []


def judge_counting(spec: CaptionSpec, objects: list[DetectedObject], matches: list[int | None], group: list[int]):
    """A counting caption's results: the group's number right and the single object (if any) found."""
    results = {"counting": len(group) == spec.count and None not in matches[1:]}
    results["exact"] = results["counting"] and len(objects) == len(spec.instances())
    results["all"] = all(results.values())
    return results


def judge(
    spec: CaptionSpec, objects: list[DetectedObject], matches: list[int | None], resolution: int, group=()
) -> dict:
    """The category results for one caption (see the module docstring); ``group``: the counted
    group's detections (:func:`group_members`), for counting captions."""
    if spec.count > 1:
        return judge_counting(spec, objects, matches, list(group))
    if len(spec.objects) == 1:
        main = objects[0] if objects else None
        colour, shape = spec.objects[0]
        results = {
            "colour": main is not None and main.colour == colour,
            "shape": main is not None and main.shape == shape,
            "count": len(objects) == 1,
        }
        results["object"] = results["colour"] and results["shape"]
        results["exact"] = results["object"] and results["count"]
        if spec.position is not None:
            results["position"] = main is not None and satisfies_position(main.centroid, spec.position, resolution)
        results["all"] = all(results.values())
        return results
    both = None not in matches
    results = {"both": both, "count": len(objects) == 2}
    results["exact"] = both and results["count"]  # the two found are the two named: no duplicate, no extra
    if spec.relation != "and":
        a, b = (objects[m].centroid for m in matches) if both else (None, None)
        results["relation"] = both and satisfies_relation(a, b, spec.relation, resolution)
    results["all"] = all(results.values())
    return results


def check_caption(
    image: np.ndarray, caption: str, resolution: int | None = None, shapes: tuple[str, ...] = SHAPES
) -> CaptionCheck:
    """Analyse ``image`` and judge it against ``caption`` (``ValueError`` for a caption outside the
    vocabulary or an image of the wrong size, naming what is accepted)."""
    spec = parse_caption(caption, shapes)
    objects = analyze(image, resolution, shapes)
    size = np.asarray(image).shape[0]
    matches, group = match_objects(spec, objects, size), group_members(spec, objects)
    return CaptionCheck(caption, spec.kind, judge(spec, objects, matches, size, group), matches, objects, spec, group)


def score_single_object(images, colour: str, shape: str, shapes: tuple[str, ...] | None = None) -> dict[str, float]:
    """How often images prompted with ``"a {colour} {shape}"`` show exactly that one object.

    Fractions of ``images`` ((N, H, W, 3) uint8): ``count`` (exactly one object found), ``shape`` /
    ``colour`` (exactly one object, of that shape / colour), ``object`` (both); ``n``. The analyzer
    chooses among the default shapes plus ``shape`` unless ``shapes`` says otherwise, so a ring
    drawn for "a red circle" is a wrong shape, and a disc drawn for "a red ring" is a circle.
    The fine-tuning acceptance (issue 7): ring ``shape`` ≥ 0.8 and ``colour`` ≥ 0.9 over 60 seeds."""
    if len(images) == 0:
        raise ValueError("no images to score; pass at least one (H, W, 3) uint8 image")
    shapes = shapes or vocabulary_with((shape,))
    caption = format_caption([(colour, shape)])
    tally = {"count": 0, "shape": 0, "colour": 0, "object": 0}
    for image in images:
        results = check_caption(np.asarray(image), caption, shapes=shapes).results
        for key in ("shape", "colour", "object"):
            tally[key] += int(results["count"] and results[key])
        tally["count"] += int(results["count"])
    return {**{k: v / len(images) for k, v in tally.items()}, "n": len(images)}
