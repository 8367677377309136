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

from .local_blend import object_region
from .recolour import recoloured


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


def object_blended(controller, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """``after`` (the controller's step: source on the path, targets blended over P2P's coarse region) with
    each target row blended instead over the object its region points at in the given image
    (:func:`~crossattn.editing.local_blend.object_region`), from its latents ``before`` the coarse blend:
    every pixel outside the object is the source's, every pixel of it (and its rim) the target's."""
    image = controller.source_path[-1].to(after).reshape(after.shape[1:])  # (C, H, W): x_0 on the path, the image
    regions = controller.local_blend.mask(after.shape[-2:]) > 0  # (targets, 1, H, W)
    out = after.clone()
    for j in range(len(controller.token_maps)):
        mask = object_region(regions[j, 0], image).to(after)  # (H, W)
        out[1 + j] = after[0] + mask * (before[1 + j] - after[0])  # (C, H, W)
    return out


def given_image_callback(controller):
    """``controller.step_callback`` for an edit of a given image, with what its settings add there: during
    the pinned steps, with ``direct_inversion``, each target row first moves by the source row's correction
    ``x*_{t-1} − x_s`` (the controller then puts the source on the path: the same correction); with
    ``object_blend`` (or ``recolour``), the local blend's region narrowed to the object's own pixels; with
    ``recolour``, after the last step each target the source recoloured (:mod:`crossattn.editing.recolour`). A
    ``callback_on_step_end``."""
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
            out = {**out, "latents": object_blended(controller, latents, out["latents"])}
        if settings.recolour and blend is not None and blend.reference and step == controller.steps - 1:
            pixels = getattr(pipe, "vae", None) is None  # a pixel-space model: shades are scales of the fill
            out = {**out, "latents": recoloured(controller, out["latents"], pixels)}
        return out

    return step_callback
