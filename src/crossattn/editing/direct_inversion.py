"""Direct Inversion for edits of a given image: the source row on the inversion path, the targets corrected alike.

Ju et al., "PnP Inversion: Boosting Diffusion-based Editing with 3 Lines of Code" (ICLR 2024): instead of
optimising anything, after each sampling step put the source branch back on the inversion path,
``x_s ← x_s + d`` with ``d = x*_{t-1} − x_s`` (``x*``: the inversion's latents), so the maps and
latents the target takes from the source are the given image's. The source alone on the path
(``carry=False``) was the edit's pinning before issue 41. With ``carry=True`` the target rows get the
same ``d``: the step's drift from the path under guidance (the inversion's own error, not the edit's) is
taken out of the targets too, so a target stays the given image plus what the prompt change itself moved,
instead of sampling freely into the model's own drawing style (a turned triangle coming back upright).
Written as ``x_t ← x_t + d`` for each target ``t``, that is the target's own step, shifted by the source's
correction: the edit's difference ``x_t − x_s`` is kept exactly as the step made it.
"""

from __future__ import annotations

import torch

from .local_blend import object_matte, object_region, shaded_matte


def put_on_path(latents: torch.Tensor, on_path: torch.Tensor, targets: int, carry: bool) -> torch.Tensor:
    """``latents`` ``(B, C, H, W)`` (rows ``[source, *targets, *extra]``, a copy the caller may change) with
    the source row set to ``on_path`` ``(C, H, W)``; with ``carry``, each of the ``targets`` rows after it
    moved by the same correction. Extra rows (an edit's uncontrolled ``plain`` row) are left alone."""
    on_path = on_path.to(latents).reshape(latents.shape[1:])  # (C, H, W); the path keeps (1, C, H, W)
    correction = on_path - latents[0]  # (C, H, W): where the source's step missed the path
    latents[0] = on_path
    if carry and targets:
        latents[1 : 1 + targets] = latents[1 : 1 + targets] + correction  # (targets, C, H, W)
    return latents


def object_blended(controller, before: torch.Tensor, after: torch.Tensor, pixels: bool = False) -> torch.Tensor:
    """``after`` (the controller's step: source on the path, targets blended over P2P's coarse region) with
    each target row blended instead over the object its region points at in the given image
    (:func:`~crossattn.editing.local_blend.object_region`), from its latents ``before`` the coarse blend:
    every pixel outside the object is the source's, every pixel of it (and its rim) the target's. With
    ``recolour``, the target's step brought to a recolouring of the object instead (:func:`recoloured`), over
    the object's shading (``pixels``: a pixel-space model; ``shaded_matte``) or its matte (a VAE's latents,
    where a shade is not a scale of the fill; ``object_matte``)."""
    blend = controller.local_blend
    image = controller.source_path[-1].to(after).reshape(after.shape[1:])  # (C, H, W): x_0 on the path, the image
    regions = blend.mask(after.shape[-2:]) > 0  # (targets, 1, H, W)
    out = after.clone()
    for j in range(len(controller.token_maps)):
        if controller.settings.recolour:
            matte = (shaded_matte if pixels else object_matte)(regions[j, 0], image)  # (P, H, W) or (H, W)
            out[1 + j] = recoloured(after[0], before[1 + j], matte.to(after))
            continue
        mask = object_region(regions[j, 0], image).to(after)  # (H, W)
        out[1 + j] = after[0] + mask * (before[1 + j] - after[0])  # (C, H, W)
    return out


def recoloured(source: torch.Tensor, target: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``target`` ``(C, H, W)`` brought to the nearest recolouring of the objects in ``source``: ``source +
    sum_p alpha_p * delta_p``, one ``delta_p`` per channel and object, fitted by least squares to ``target -
    source`` over that object's matte ``alpha_p`` (``alpha``: ``(H, W)``, one object, or ``(P, H, W)``). The
    step keeps each object's outline and inner shading the given image's (a turned triangle stays turned) and
    takes from the target only how its colour moved; an object the word's region also covers but the target
    left alone keeps its colour. (The median over the matte's core instead, robust to a target that redraws
    the object smaller, kept fewer outlines on issue 41's drawings: 0.55 against 0.61, docs/benchmarks.md.)"""
    weight = alpha.reshape(-1, 1, *alpha.shape[-2:])  # (P, 1, H, W)
    moved = ((target - source)[None] * weight).sum(dim=(2, 3))  # (P, C)
    delta = moved / (weight * weight).sum(dim=(2, 3)).clamp_min(1e-12)  # (P, C)
    return source + (weight * delta[:, :, None, None]).sum(dim=0)  # (C, H, W)


def given_image_callback(controller):
    """``controller.step_callback`` for an edit of a given image, with what its settings add there: during
    the pinned steps, with ``direct_inversion``, each target row first moves by the source row's correction
    ``x*_{t-1} − x_s`` (the controller then puts the source on the path: the same correction); with
    ``object_blend``, the local blend's region narrowed to the object's own pixels. A ``callback_on_step_end``."""
    settings = controller.settings

    def step_callback(pipe, step: int, t, tensors: dict) -> dict:
        latents = tensors["latents"]
        if settings.direct_inversion and step < controller.pinned_stop:
            on_path = controller.source_path[step]
            latents = put_on_path(latents.clone(), on_path, len(controller.token_maps), carry=True)
        out = controller.step_callback(pipe, step, t, {**tensors, "latents": latents})
        blend = controller.local_blend
        if (
            (settings.object_blend or settings.recolour)
            and blend is not None
            and blend.maps is not None
            and step >= controller.shared_stop
        ):
            pixels = getattr(pipe, "vae", None) is None
            out = {**out, "latents": object_blended(controller, latents, out["latents"], pixels)}
        return out

    return step_callback
