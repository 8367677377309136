"""Plug-and-Play feature injection: the targets take the source's decoder ResBlock outputs.

Tumanyan et al., "Plug-and-Play Diffusion Features for Text-Driven Image-to-Image Translation" (CVPR 2023):
the spatial features of the decoder's first ResBlocks carry the image's structure (where its parts are,
their outlines) and little of its appearance, so a target branch given the source branch's features there
(for the first ``τ_f`` of the steps), and the source's self-attention queries and keys (its self-attention
maps: :class:`~crossattn.editing.control.Controller`'s ``self_steps``), keeps the source's layout while its
own text draws the appearance. The source here is the edit's source row (in an edit of a given image, the
image's inversion), as PnP's source is the guidance image's inversion.

Per sampling step ``i < feature_steps·N``, each ResBlock ``r`` of the first ``feature_blocks`` decoder
up-blocks (the first: the U-Net's coarsest decoder resolution, PnP's choice "layer 4" of Stable Diffusion's
decoder being its first block at 16×16 of a 64×64 latent): ``h_t^r ← h_s^r`` for each target row of the
controlled guidance halves. Installed as forward hooks on those ResBlocks by the controller (through its
``add_hooks``, so they are removed with the processors, also after an exception).
"""

from __future__ import annotations

from contextlib import ExitStack

import torch


def decoder_resnets(unet, blocks: int) -> list[torch.nn.Module]:
    """The ResBlocks of the first ``blocks`` decoder up-blocks of a ``UNet2DConditionModel``, in order; a
    ``ValueError`` naming the count when the U-Net has fewer up-blocks."""
    up_blocks = list(getattr(unet, "up_blocks", ()))
    if not 1 <= blocks <= len(up_blocks):
        raise ValueError(f"feature_blocks is {blocks}; this U-Net has {len(up_blocks)} decoder up-blocks (1 to that)")
    return [resnet for block in up_blocks[:blocks] for resnet in getattr(block, "resnets", ())]


class FeatureInjection:
    """The forward hooks that give each target row the source row's ResBlock output, while ``controller``
    says so (its step before ``feature_stop``, the target rows in the batch). ``controller``: a
    :class:`~crossattn.editing.control.Controller` (its ``step``, ``halves_of``, ``token_maps``, settings)."""

    def __init__(self, controller, modules: list[torch.nn.Module]):
        self.controller, self.modules = controller, modules

    def install(self, undo: ExitStack) -> None:
        """A forward hook on every module, each removal pushed onto ``undo``."""
        for module in self.modules:
            undo.callback(module.register_forward_hook(self._inject).remove)

    def active(self) -> bool:
        controller = self.controller
        return not controller._dropped and controller.step < controller.feature_stop

    def _inject(self, module, args, output: torch.Tensor) -> torch.Tensor | None:
        """``output`` ``(B, C, h, w)`` with each controlled target row the source row of its half."""
        if not self.active():
            return None
        controller = self.controller
        out = output.clone()  # the module's own tensor is left as computed
        for first, half in controller.halves_of(output.shape[0]):
            if half == "cond" or controller.settings.halves == "both":
                targets = len(controller.token_maps)
                out[first + 1 : first + 1 + targets] = output[first : first + 1]  # (targets, C, h, w) ← source
        return out
