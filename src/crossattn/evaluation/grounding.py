"""Grounding: does a word's cross-attention map land on the object the word names?

DAAM's measure (Tang et al., "What the DAAM: Interpreting Stable Diffusion Using Cross Attention",
ACL 2023): the word's map, normalised to [0, 1], thresholded at τ = 0.4, compared by IoU with the
object's mask. Here the mask is the analyzer's mask of the object matched to the word (the colour
and shape words of the caption's objects). Maps are non-negative attention probabilities, so they
are normalised by dividing by their maximum: a uniform map becomes 1 everywhere and its IoU is the
mask's area fraction.

Counting captions (issue 40): the counted group's colour, shape and number words are compared with
the union of the masks of the group's detections (the objects of its colour and shape, however many
were drawn); the number word is reported as its own kind, ``number``: does "two" attend to the group?
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..attention.words import merge_words
from .checks import CaptionCheck

TAU = 0.4


def to_numpy(word_map) -> np.ndarray:
    """A torch tensor or array → float64 numpy (H, W)."""
    if hasattr(word_map, "detach"):
        word_map = word_map.detach().float().cpu().numpy()
    return np.asarray(word_map, np.float64)


def normalise_map(word_map) -> np.ndarray:
    """Min-max normalise an (H, W) map to [0, 1], as DAAM does before thresholding.

    Cross-attention maps are never near zero anywhere (each pixel's probabilities over the tokens sum
    to 1), so dividing by the maximum alone leaves the background above τ and the IoU meaningless.
    A constant map carries no location: it becomes all ones (so a uniform map's IoU is the mask's
    area fraction)."""
    m = to_numpy(word_map).astype(np.float64)
    low, high = m.min(), m.max()
    return (m - low) / (high - low) if high > low else np.ones_like(m)


def map_iou(word_map, mask: np.ndarray, tau: float = TAU) -> float:
    """IoU of ``normalise_map(word_map) >= tau`` with the boolean ``mask`` (both (H, W))."""
    m, mask = to_numpy(word_map), np.asarray(mask, bool)
    if m.shape != mask.shape:
        raise ValueError(f"word map is {m.shape} but the mask is {mask.shape}; they must match (the image size)")
    if not 0.0 < tau <= 1.0:
        raise ValueError(f"threshold tau must be in (0, 1], got {tau}")
    hot = normalise_map(m) >= tau
    union = np.logical_or(hot, mask).sum()
    return float(np.logical_and(hot, mask).sum() / union) if union else 0.0


def object_mask(check: CaptionCheck, obj: int) -> np.ndarray | None:
    """The analyzer's (H, W) mask of caption object ``obj`` (a counted group: the union of its
    detections' masks), or None when it was not found."""
    if check.spec.count > 1 and obj == 0:
        return np.any([check.objects[i].mask for i in check.group], axis=0) if check.group else None
    match = check.matches[obj]
    return None if match is None else check.objects[match].mask


def ground_words(check: CaptionCheck, word_map: Callable[[int], object | None], tau: float = TAU) -> list[dict]:
    """IoU for every colour and shape word of ``check.caption`` and its number word, if any.

    ``word_map(word_index)`` gives the (H, W) map of word ``caption.split()[word_index]``, or None
    when it cannot; a word whose object was not found is skipped with the reason.
    """
    spec = check.spec
    words = list(spec.object_words())
    if spec.number_word() is not None:
        words.insert(0, (spec.number_word(), 0, "number"))
    records = []
    for index, obj, kind in words:
        record = {"word": spec.words[index], "index": index, "kind": kind, "iou": None, "skipped": None}
        mask = object_mask(check, obj)
        m = word_map(index) if mask is not None else None
        if mask is None:
            record["skipped"] = "object not found"
        elif m is None:
            record["skipped"] = "no map for this word"
        else:
            record["iou"] = map_iou(m, mask, tau)
        records.append(record)
    return records


def attention_word_map(maps, caption: str, image: int) -> Callable[[int], object | None]:
    """``word_map(index)`` over the capture issue's ``AttentionMaps`` for image ``image``.

    A word that occurs once uses ``maps.word_map(word, image=i)``. ``word_map`` sums every
    occurrence, so a word that occurs twice (two objects sharing a colour or a shape) is read from
    its own tokens (``token_map``) when the recorded tokens line up with the caption's words, and
    gives None (reported as skipped) otherwise.
    """
    words = caption.split()

    def word_map(index: int):
        word = words[index]
        if words.count(word) == 1:
            return maps.word_map(word, image=image)
        spans = token_spans(maps, image)
        if spans is None or [w for w, _ in spans] != words:
            return None
        return sum(maps.token_map(t, image=image) for t in spans[index][1])

    return word_map


def token_spans(maps, image: int) -> list[tuple[str, list[int]]] | None:
    """``(word, token indices)`` of the recorded prompt, or None if the maps cannot say."""
    if not hasattr(maps, "tokens_for"):
        return None
    return merge_words(maps.tokens_for(image))


def load_trace() -> tuple[Callable, None]:
    """The tracer for grounding, as ``(trace, reason unavailable)``: the reason is None, capture is part of
    the package (the pair's shape is the eval command's, whose reason is set when grounding is switched off)."""
    from ..attention.trace import trace  # torch: imported when an evaluation runs, not with this module

    return trace, None
