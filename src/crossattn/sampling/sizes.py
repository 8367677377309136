"""Image sizes a pipeline takes: its own default, and which heights and widths it accepts.

A U-Net halves its input ``levels - 1`` times and a VAE shrinks the image ``vae_scale_factor`` times;
SD3's transformer cuts the latents into ``patch_size`` patches and Flux packs 2×2 latents into a
token. A side must be a multiple of what all of that divides it by, or the pipeline fails (or quietly
crops) deep inside; :func:`check_size` says so first, naming the value and what is accepted.
"""

from __future__ import annotations


def _side(size) -> int:
    return int(size[0] if isinstance(size, list | tuple) else size)


def size_multiple(pipe) -> int:
    """What every image side must be a multiple of for ``pipe``."""
    scale = int(getattr(pipe, "vae_scale_factor", 1) or 1)
    unet = getattr(pipe, "unet", None)
    if unet is not None:
        return scale * 2 ** (len(unet.config.block_out_channels) - 1)
    from ..attention.layers import joint_patch

    return scale * joint_patch(pipe.transformer)  # SD3's patches, Flux's 2×2 packing


def default_size(pipe) -> tuple[int, int]:
    """``(height, width)`` the pipeline makes when none is named: its model's own size."""
    scale = int(getattr(pipe, "vae_scale_factor", 1) or 1)
    unet = getattr(pipe, "unet", None)
    model = unet if unet is not None else pipe.transformer
    own = getattr(pipe, "default_sample_size", None)  # SD3, Flux, Flux.2, Qwen-Image; PixArt-Σ, Sana: the config's
    side = _side(model.config.sample_size) if unet is not None or own is None else int(own)
    return side * scale, side * scale


def check_size(pipe, height: int | None, width: int | None) -> tuple[int, int]:
    """``(height, width)`` to sample at: each given side checked against :func:`size_multiple`, a side
    left None taking the model's own (:func:`default_size`). A ``ValueError`` names a bad side."""
    default, multiple = default_size(pipe), size_multiple(pipe)
    size = []
    for name, value, own in (("height", height, default[0]), ("width", width, default[1])):
        if value is not None and (value < multiple or value % multiple):
            raise ValueError(
                f"{name} {value} is not accepted by {type(pipe).__name__}: give a multiple of {multiple} "
                f"(its own size is {default[0]}x{default[1]})"
            )
        size.append(own if value is None else value)
    return size[0], size[1]
