"""SDXL's added conditioning for the U-Net passes of an inversion, which no pipeline call makes for us.

An SDXL-shaped U-Net (``addition_embed_type == "text_time"``) reads, besides the text states, the pooled
text embedding of the second text encoder and six "time ids" (original size, crop corner, target size:
Podell et al., "SDXL", 2023, §2.2), as ``added_cond_kwargs = {"text_embeds", "time_ids"}``. The pipeline
builds them in its ``__call__``; DDIM and null-text inversion call the U-Net directly
(:mod:`crossattn.sampling.inversion`), so :class:`AddedConditioning` hands every such call that has none
the prompt's, built the way ``StableDiffusionXLPipeline.__call__`` builds them (no crop, the image's size
as original and target size). The edit itself samples through the pipeline, which adds its own; in the rows
whose unconditional text states :class:`~crossattn.sampling.inversion.NullText` replaces (the source row's),
:func:`null_rows_pooled` also puts the prompt's pooled text where the pipeline put the negative prompt's, so
those rows run as the inversion ran them (with the negative's, a guided source row on the tiny SDXL drew
14.6 dB from its unguided self instead of the same picture: negative-prompt inversion's guidance-free
reconstruction, Miyake et al., 2023, needs the unconditional pass to be the conditional one).
"""

from __future__ import annotations

import contextlib

import torch


def takes_added_conditioning(pipe) -> bool:
    """Whether ``pipe``'s U-Net needs SDXL's text-and-time added conditioning."""
    return getattr(getattr(pipe.unet, "config", None), "addition_embed_type", None) == "text_time"


def sdxl_prompt_states(pipe, prompt: str, negative_prompt: str | None, guided: bool):
    """``(cond (1, T, D), uncond (1, T, D) or None, pooled (1, P))``: an SDXL pipeline's own encoding of the
    prompt (both text encoders, concatenated) and of the negative prompt when ``guided``."""
    with torch.no_grad():  # states, not a graph: null-text's fit differentiates through the U-Net only
        cond, uncond, pooled, _ = pipe.encode_prompt(
            prompt,
            device=pipe.device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=guided,
            negative_prompt=negative_prompt,
        )
    return cond, uncond if guided else None, pooled


def added_conditions(pipe, prompt: str, size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """``{"text_embeds": (1, P), "time_ids": (1, 6)}`` of ``prompt`` for an image of ``size`` (h, w) pixels."""
    _, _, pooled = sdxl_prompt_states(pipe, prompt, None, guided=False)
    time_ids = pipe._get_add_time_ids(  # diffusers' own builder of the six ids, with its size check
        tuple(size), (0, 0), tuple(size), dtype=pooled.dtype, text_encoder_projection_dim=int(pooled.shape[-1])
    )
    return {"text_embeds": pooled, "time_ids": time_ids.to(pooled.device)}


class AddedConditioning:
    """Context manager: every U-Net call without ``added_cond_kwargs`` gets ``conditions`` (each ``(1, ...)``,
    repeated to the call's batch). A forward pre-hook, removed on exit, also after an exception."""

    def __init__(self, unet, conditions: dict[str, torch.Tensor]):
        self.unet, self.conditions, self._handle = unet, conditions, None

    def __enter__(self):
        self._handle = self.unet.register_forward_pre_hook(self._add, with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()
        self._handle = None

    def _add(self, module, args, kwargs):
        if kwargs.get("added_cond_kwargs") is not None:
            return None
        sample = args[0] if args else kwargs["sample"]
        rows = sample.shape[0]
        added = {k: v.to(sample.device).expand(rows, *v.shape[1:]) for k, v in self.conditions.items()}  # (B, ...)
        return args, {**kwargs, "added_cond_kwargs": added}


def added_conditioning(pipe, prompt: str, latents: torch.Tensor):
    """:class:`AddedConditioning` with ``prompt``'s conditions for ``pipe`` when its U-Net needs them (the
    image's pixel size read from the ``(1, C, h, w)`` model-space ``latents``); else a context that does nothing."""
    if not takes_added_conditioning(pipe):
        return contextlib.nullcontext()
    scale = getattr(pipe, "vae_scale_factor", 1)
    size = (latents.shape[-2] * scale, latents.shape[-1] * scale)
    return AddedConditioning(pipe.unet, added_conditions(pipe, prompt, size))


def null_rows_pooled(kwargs: dict, rows: int) -> dict:
    """A guided U-Net call's ``kwargs`` with, in its first ``rows`` unconditional rows, the pooled text of the
    matching conditional rows (their prompt's, ``(2B, P)``: unconditional half first, as diffusers orders it):
    the rows whose text states :class:`~crossattn.sampling.inversion.NullText` makes the prompt's own or its
    fitted null states, which the inversion ran and fitted with the prompt's pooled text (:class:`AddedConditioning`).
    A call without SDXL's added conditioning is returned as it came."""
    added = kwargs.get("added_cond_kwargs")
    if not added or added.get("text_embeds") is None:
        return kwargs
    pooled = added["text_embeds"]  # (2B, P)
    half = pooled.shape[0] // 2
    pooled = torch.cat([pooled[half : half + rows], pooled[rows:]])  # (2B, P): rows 0..rows-1 from the cond half
    return {**kwargs, "added_cond_kwargs": {**added, "text_embeds": pooled}}
