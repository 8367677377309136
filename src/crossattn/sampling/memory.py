"""What a sampling job needs in memory, estimated before it runs, and what this machine has free.

A size or an upscale factor that cannot fit is refused up front (by
:meth:`crossattn.sampling.SamplingRequest.check_fits`) with the estimate, instead of the kernel killing
the process after minutes of swapping. The estimate is deliberately rough and on the high side: the
largest attention matrix the denoiser forms (self-attention over every latent pixel, per head, for the
guided and unguided halves of the batch, kept whole when maps are recorded), the activations around
it, and the decoded and upscaled images.
"""

from __future__ import annotations

import os

#: Attention and activations are counted this many times over (the tensors alive around the largest
#: one: its softmax input and output, the values, the processor's copy).
WORKING_COPIES = 3


def available_bytes() -> int | None:
    """Memory this machine has free for a new allocation (``MemAvailable`` of ``/proc/meminfo``, else
    the free physical pages); None where neither can be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


#: Keys a fused attention kernel (PyTorch's SDPA, on the CPU too) holds scores for at once: without
#: recorded self-attention no ``N × N`` matrix is formed, only blocks of this many keys per query.
FUSED_KEY_BLOCK = 512


def attention_bytes(pipe, height: int, width: int, batch: int, guided: bool = True, full: bool = True) -> int:
    """Bytes of the largest attention matrix ``pipe``'s denoiser forms at ``height`` x ``width`` for
    ``batch`` images: ``(2B × heads, N, N)`` for N latent pixels (tokens) at the finest attention level
    when ``full`` (self-attention recorded), else ``(2B × heads, N, min(N, FUSED_KEY_BLOCK))``."""
    scale = int(getattr(pipe, "vae_scale_factor", 1) or 1)
    pixels = (height // scale) * (width // scale)  # latent pixels at the first level
    unet = getattr(pipe, "unet", None)
    if unet is not None:
        kinds = list(unet.config.down_block_types)
        level = next((i for i, kind in enumerate(kinds) if "CrossAttn" in kind), len(kinds) - 1)
        tokens = pixels // 4**level  # each level halves both sides
        heads = unet.config.get("num_attention_heads") or unet.config.attention_head_dim
    else:
        denoiser = pipe.transformer
        tokens = pixels // int(denoiser.config.get("patch_size", 2) or 1) ** 2
        heads = denoiser.config.num_attention_heads
    heads = max(heads) if isinstance(heads, list | tuple) else int(heads)
    element = pipe.dtype.itemsize if hasattr(pipe.dtype, "itemsize") else 4
    keys = tokens if full else min(tokens, FUSED_KEY_BLOCK)
    return (2 if guided else 1) * batch * heads * tokens * keys * element


def sampling_bytes(pipe, height: int, width: int, batch: int, upscale: int | None, full: bool = True) -> int:
    """The estimated peak of sampling ``batch`` images at ``height`` x ``width`` (and writing each
    ``upscale`` times larger): attention (``full``: self-attention recorded, see :func:`attention_bytes`)
    and its working copies, plus the RGB images and upscaled copy."""
    images = batch * height * width * 3 * 4  # float32 RGB out of the decoder
    upscaled = 2 * 3 * height * width * (upscale or 1) ** 2  # the big RGB copy and its PNG encoder's rows
    return WORKING_COPIES * attention_bytes(pipe, height, width, batch, full=full) + images + upscaled


def gigabytes(n: float) -> str:
    """``n`` bytes in GB (or TB), e.g. ``'11.2 GB'``."""
    return f"{n / 1e12:,.0f} TB" if n >= 1e12 else f"{n / 1e9:.1f} GB"
