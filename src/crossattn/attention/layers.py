"""Which attention layers a U-Net has, what kind each is, at which resolution, and selection by pattern.

A layer is named by its processor key without the ``.processor`` suffix, e.g.
``down_blocks.1.attentions.0.transformer_blocks.0.attn2``: ``attn1`` is self-attention
(Q, K, V from the image), ``attn2`` cross-attention (Q from the image, K, V from the text).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

KINDS = ("cross", "self", "both")
_LEVEL = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.")


@dataclass(frozen=True)
class LayerInfo:
    """One attention layer: ``name`` (processor key minus ``.processor``), ``kind``, ``resolution``."""

    name: str
    kind: str  # "cross" or "self"
    resolution: int  # side length of its feature map at the U-Net's default sample size

    @property
    def key(self) -> str:
        """The key ``unet.set_attn_processor`` expects."""
        return f"{self.name}.processor"


def _sample_side(unet) -> int:
    size = unet.config.sample_size
    return int(size[0] if isinstance(size, list | tuple) else size)


def layer_resolution(unet, name: str) -> int:
    """Feature-map side of a layer: ``sample_size / 2**level`` (down block i is at level i,
    up block j at level ``n-1-j``, the mid block at the lowest level ``n-1``)."""
    levels = len(unet.config.block_out_channels)
    match = _LEVEL.match(name)
    if match is None:  # mid_block
        level = levels - 1
    elif match.group(1) == "down_blocks":
        level = int(match.group(2))
    else:
        level = levels - 1 - int(match.group(2))
    return _sample_side(unet) // 2**level


def attention_layers(unet) -> list[LayerInfo]:
    """Every ``attn1`` / ``attn2`` layer of the U-Net, in processor order."""
    layers = []
    for key in unet.attn_processors:
        name = key.removesuffix(".processor")
        kind = {"attn1": "self", "attn2": "cross"}.get(name.rsplit(".", 1)[-1])
        if kind is not None:
            layers.append(LayerInfo(name, kind, layer_resolution(unet, name)))
    return layers


def matches(name: str, resolution: int | None, pattern: str | int) -> bool:
    """A pattern is a resolution (int), a glob (``*?[``) matched against the whole name, or a
    regular expression searched anywhere in it (a plain substring is one)."""
    if isinstance(pattern, int):
        return resolution == pattern
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return re.search(pattern, name) is not None


def select_layers(layers: list[LayerInfo], kind: str, patterns=None) -> list[LayerInfo]:
    """The layers of ``kind`` matching any of ``patterns`` (None: all); an error lists the names."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}; accepted: {', '.join(KINDS)}")
    pool = [layer for layer in layers if kind == "both" or layer.kind == kind]
    if not pool:
        raise ValueError(f"this U-Net has no {kind}-attention layers")
    if patterns is None:
        return pool
    patterns = [patterns] if isinstance(patterns, str | int) else list(patterns)
    chosen = [layer for layer in pool if any(matches(layer.name, layer.resolution, p) for p in patterns)]
    if not chosen:
        described = ", ".join(f"{layer.name} ({layer.resolution}px)" for layer in pool)
        raise ValueError(f"layers {patterns!r} match no {kind}-attention layer; layers are: {described}")
    return chosen
