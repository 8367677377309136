"""Which attention layers a denoiser has, what kind each is, at which resolution, and selection by pattern.

In a U-Net a layer is named by its processor key without the ``.processor`` suffix, e.g.
``down_blocks.1.attentions.0.transformer_blocks.0.attn2``: ``attn1`` is self-attention
(Q, K, V from the image), ``attn2`` cross-attention (Q from the image, K, V from the text).

In a joint-attention transformer (SD3, Flux: :mod:`crossattn.attention.joint`) one attention module
holds both: its image→text block is the layer ``<module>.text`` (kind ``cross``), its image→image
block ``<module>.image`` (kind ``self``), e.g. ``transformer_blocks.0.attn.text``. SD3.5's extra
image-only ``attn2`` holds image tokens only: it is the self-attention layer ``transformer_blocks.0.attn2.image``.
Cross-attention transformers (PixArt-Σ, Sana) name ``attn1`` / ``attn2`` as a U-Net does, at the patch grid's
resolution; a module without a softmax map (Sana's linear ``attn1``) is not listed
(:mod:`crossattn.attention.families` declares which).
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
    resolution: int  # side length of its feature map at the denoiser's default sample size
    module: str | None = None  # the attention module, where it is not ``name`` (joint layers)

    @property
    def key(self) -> str:
        """The key ``model.set_attn_processor`` expects."""
        return f"{self.module or self.name}.processor"


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


def is_joint(model) -> bool:
    """Whether ``model`` is a joint-attention transformer (SD3's and Flux's configs name a ``joint_attention_dim``)."""
    return getattr(getattr(model, "config", None), "joint_attention_dim", None) is not None


def joint_patch(model) -> int:
    """Latent pixels per token side of a transformer: SD3's patch size; Flux, Flux.2 and Qwen-Image pack 2×2
    latents into a token (the packing is the pipeline's: their families declare it)."""
    from .families import family_of

    family = family_of(model)
    if family is not None and family.patch > 1:
        return family.patch
    return int(getattr(model.config, "patch_size", 1) or 1)


def joint_side(model) -> int:
    """Token-grid side of a joint transformer at its pipeline's default size: SD3's ``sample_size``, or
    Flux's pipeline default latent side 128 (its config names none), over :func:`joint_patch`."""
    return int(getattr(model.config, "sample_size", 128)) // joint_patch(model)


def joint_layers(model) -> list[LayerInfo]:
    """The ``.text`` (cross) and ``.image`` (self) layers of every joint attention module, in processor order."""
    from .families import family_of

    family = family_of(model)
    image_only = family.image_only if family is not None else ()
    layers, side = [], joint_side(model)
    for key in model.attn_processors:
        module = key.removesuffix(".processor")
        attn = model.get_submodule(module)
        if module.rsplit(".", 1)[-1] in image_only:  # SD3.5's attn2: image tokens only
            layers.append(LayerInfo(f"{module}.image", "self", side, module))
        elif getattr(attn, "add_k_proj", None) is not None or module.startswith("single_transformer_blocks."):
            layers.append(LayerInfo(f"{module}.text", "cross", side, module))
            layers.append(LayerInfo(f"{module}.image", "self", side, module))
    return layers


def attention_layers(unet) -> list[LayerInfo]:
    """Every ``attn1`` / ``attn2`` layer of a U-Net (or joint layer of a transformer), in processor order."""
    from .families import family_of

    if is_joint(unet):
        return joint_layers(unet)
    family = family_of(unet)
    flat = not hasattr(unet.config, "block_out_channels")  # a transformer (PixArt-Σ, Sana): one resolution
    skipped = family.no_softmax if family is not None else ()
    layers = []
    for key in unet.attn_processors:
        name = key.removesuffix(".processor")
        last = name.rsplit(".", 1)[-1]
        kind = {"attn1": "self", "attn2": "cross"}.get(last)
        if kind is not None and last not in skipped:
            layers.append(LayerInfo(name, kind, joint_side(unet) if flat else layer_resolution(unet, name)))
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
        raise ValueError(f"this model has no {kind}-attention layers")
    if patterns is None:
        return pool
    patterns = [patterns] if isinstance(patterns, str | int) else list(patterns)
    chosen = [layer for layer in pool if any(matches(layer.name, layer.resolution, p) for p in patterns)]
    if not chosen:
        described = ", ".join(f"{layer.name} ({layer.resolution}px)" for layer in pool)
        raise ValueError(f"layers {patterns!r} match no {kind}-attention layer; layers are: {described}")
    return chosen
