"""``crossattn.control``: prompt-to-prompt attention control as an attention processor.

Hertz et al., "Prompt-to-Prompt Image Editing with Cross-Attention Control" (ICLR 2023): sample a
source prompt and an edited (target) prompt in one batch from the same noise, and during the first
steps give the target the source's attention maps, so the layout stays and only what the changed
words carry (colour, shape) changes. Per sampling step ``i`` of ``N``:

- cross-attention (``attn2``), ``i < cross_steps·N``: ``P_t[:, r] ← α_r (P_s M)[:, r] + (1 − α_r) P_t[:, r]``,
  with ``M`` the source→target token map and ``α_r = 0`` for target tokens without a source
  counterpart (P2P's word swap and refinement mappers; :mod:`crossattn.editing.token_alignment`);
- self-attention (``attn1``) of layers with at most ``self_max_positions`` query positions,
  ``i < self_steps·N``: ``P_t ← P_s`` (P2P replaces self-attention at ≤ 16×16 only);
- re-weighting (P2P's equalizer): the target's attention to a word is multiplied by ``F``, at
  every step (also after the injection window, so it works with ``cross_steps=0``);
- on the latents, through :meth:`Controller.step_callback` (a ``callback_on_step_end``): for the first
  ``shared_steps`` the targets follow the source's latents and take its U-Net output, without the
  U-Net computing their rows (:mod:`crossattn.editing.shared_rows`; the edit starts from the source's
  partly denoised image, as SDEdit does; Meng et al., ICLR 2022), and with ``blend`` P2P's local
  blending (:mod:`crossattn.editing.local_blend`) keeps them the source's outside the changed words' region;
  given a ``source_path`` (an edit of a given image: its inversion path), for the first ``pinned_steps``
  the source row is first put back on it (Direct Inversion; Ju et al., ICLR 2024).

The output is ``P_t · V_t``: maps from the source, values from the target's own text and image.

    with crossattn.control(pipe, "a red circle", "a blue circle", cross_steps=0.8, self_steps=0.2):
        images = pipe(["a red circle", "a blue circle"], generator=[g0, g1]).images  # g0, g1: same seed

The pipeline must be called with the rows ``[source, *targets, *extra]`` (``extra``: rows sampled
alongside and left alone); under classifier-free guidance diffusers' layout ``[uncond, cond]`` is
read from the U-Net batch size. ``halves="both"`` (default) controls the unconditional rows too,
which hold the same negative prompt for source and targets (identity token map);
``halves="cond"`` controls the conditional rows only, as P2P's reference code does.

Same rules as :mod:`crossattn.attention.trace`: installed through ``unet.set_attn_processor`` on the
controlled layers only (every other layer keeps its processor object, fused attention included),
restored on exit and after an exception, refusing to stack on itself. Inside a trace
(``with trace(pipe) as t, control(pipe, ...)``, trace first) a controlled layer hands the edited
probabilities to the tracer, so the maps recorded are those the edited sampling used.
The step is the sampling loop's, handed down (:mod:`crossattn.attention.steps`: ours directly, a stock
pipeline through its ``callback_on_step_end``); step 0 starts a sampling, whose length is
``len(pipe.scheduler.timesteps)``. A bare U-Net (with ``num_steps``) has no loop to tell it: there the steps
are counted from the timesteps, by that module's one fallback.
"""

from __future__ import annotations

import math
from contextlib import ExitStack

import torch

from ..attention.install import HookError, ProcessorHook, installed, unet_of
from ..attention.layers import LayerInfo, attention_layers
from ..attention.processor import (
    CaptureProcessor,
    attention_epilogue,
    attention_probs,
    attention_prologue,
    supported_reference,
)
from ..attention.steps import LoopStep
from .feature_injection import FeatureInjection, decoder_resnets
from .local_blend import LocalBlend
from .settings import EditSettings
from .shared_rows import fill_output, shared_layout, take_rows
from .token_alignment import TokenMap, align_tokens, word_weights

#: ``control()`` on its own is P2P as published: no local blending, no shared steps (``edit()`` adds
#: both, with :class:`EditSettings`' own defaults, measured on the default model)
CONTROL_DEFAULTS = {"blend": False, "shared_steps": 0.0}


class ControlError(HookError):
    """A control was used in a way that would corrupt another control or the model."""


class ControlProcessor:
    """Explicit ``softmax(Q·Kᵀ/√d)``, edited by the controller, then ``· V`` (as ``AttnProcessor``).

    At steps where the controller leaves this layer alone the processor that was there before
    (``inner``: fused attention, or a tracer's capture) runs instead, so the control costs nothing
    outside its window. When ``inner`` is a tracer's capture its store also receives the edited
    probabilities."""

    def __init__(self, layer: LayerInfo, controller: Controller, inner):
        self.layer, self.controller, self.inner = layer, controller, inner
        self.sink = inner.sink if isinstance(inner, CaptureProcessor) else None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if not self.controller.active(self.layer):
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        hidden_states, residual, shape = attention_prologue(attn, hidden_states, temb)  # (B, N, C)
        batch = hidden_states.shape[0]
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        heads = attn.heads
        q, k, v = (
            attn.head_to_batch_dim(x) for x in (attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context))
        )
        # q: (B*h, N, d); k, v: (B*h, K, d), K = text tokens (cross) or image positions (self)
        if attn.norm_q is not None:  # qk-norm models: per-head normalisation, as AttnProcessor2_0
            q, k = attn.norm_q(q), attn.norm_k(k)
        mask = None if attention_mask is None else attn.prepare_attention_mask(attention_mask, k.shape[1], batch)
        probs = attention_probs(attn, q, k, mask)  # (B*h, N, K)
        probs = self.controller.edit(self.layer, probs, heads)  # (B*h, N, K)
        if self.sink is not None:
            self.sink(self.layer.name, probs, heads)
        out = attn.batch_to_head_dim(torch.bmm(probs, v))  # (B, N, inner)
        return attention_epilogue(attn, out, residual, shape)


def text_length(pipe, tokenizer) -> int:
    """T, the text positions the cross-attention layers see: the tokenizer's length, capped by the text encoder's."""
    encoder = getattr(pipe, "text_encoder", None)
    cap = getattr(getattr(encoder, "config", None), "max_position_embeddings", None)
    return min(tokenizer.model_max_length, cap) if cap else tokenizer.model_max_length


def is_controlled(unet) -> bool:
    """True when ``unet`` has a control processor or a controller's step hook installed."""
    return installed(unet, Controller)


class Controller(ProcessorHook):
    """Prompt-to-prompt control of one batch ``[source, *targets, *extra rows]``; use as a context manager.

    ``pipe``: a diffusers pipeline whose ``unet`` is a ``UNet2DConditionModel`` (or the U-Net, then
    with ``tokenizer`` and ``num_steps``). ``target``: one prompt or a list. ``settings``: an
    :class:`EditSettings` (cross / self steps, reweighting, halves, blending, shared steps), or its fields
    as keywords over :data:`CONTROL_DEFAULTS` (``cross_steps=0.8, self_steps=0.2`` and no blending, no
    shared steps). ``extra_rows``: rows after the targets that are left alone. ``self_max_positions``:
    self-attention is controlled on layers with at most this many query positions (P2P: 16×16). Blending
    and shared steps act through :meth:`step_callback`, which the pipeline must be given. Bad input is a
    ``ValueError`` at construction.
    """

    processor_type = ControlProcessor
    error = ControlError
    noun = "attention control"

    def __init__(
        self,
        pipe,
        source: str,
        target: str | list[str],
        settings: EditSettings | None = None,
        *,
        extra_rows: int = 0,
        self_max_positions: int = 16 * 16,
        tokenizer=None,
        num_steps: int | None = None,
        source_path=None,
        **knobs,
    ):
        self.pipe, self.unet = pipe, unet_of(pipe)
        super().__init__(self.unet)
        self.settings = settings = EditSettings.resolve(settings, knobs, CONTROL_DEFAULTS)
        targets = [target] if isinstance(target, str) else list(target)
        if not isinstance(source, str) or not targets or not all(isinstance(t, str) for t in targets):
            raise ValueError(f"source and target must be prompts (strings), got {source!r} and {target!r}")
        if not isinstance(extra_rows, int) or extra_rows < 0:
            raise ValueError(f"extra_rows must be a whole number >= 0, got {extra_rows!r}")
        tokenizer = tokenizer if tokenizer is not None else getattr(pipe, "tokenizer", None)
        if tokenizer is None:
            raise ValueError("the control needs the prompts' tokens: pass tokenizer= with a bare U-Net")
        self.length = text_length(pipe, tokenizer)
        self.token_maps = [align_tokens(tokenizer, source, t, self.length) for t in targets]
        self.weights = [word_weights(tokenizer, t, self.length, settings.reweight) for t in targets]
        self.reweights = any(w is not None for w in self.weights)  # some target word is reweighted
        self.images, self.extra_rows = 1 + len(targets) + extra_rows, extra_rows
        self.num_steps = num_steps
        self.source_path = source_path  # a given image's inversion path, x after each step (high to low), or None
        self.local_blend = self._local_blend() if settings.blend else None
        self.layers = self._choose_layers(self_max_positions)
        self.step, self.steps, self.cross_stop, self.self_stop, self.shared_stop, self.pinned_stop = 0, None, 0, 0, 0, 0
        self.feature_stop = 0  # Plug-and-Play: the steps before it inject the source's decoder ResBlock outputs
        self.features = (
            FeatureInjection(self, decoder_resnets(self.unet, settings.feature_blocks))
            if settings.feature_fraction > 0
            else None
        )
        self.clock = LoopStep()  # the step each U-Net call belongs to
        self._traced = False  # a tracer's capture is installed: shared steps compute every row
        self._index: torch.Tensor | None = None  # during a shared step: the row each output row takes
        self._dropped = False  # during a shared step: the targets' rows are not in the U-Net batch

    def _local_blend(self) -> LocalBlend | None:
        """P2P's local blending on the changed words (None when no word changed: nothing to localise); with
        ``recolour`` and an extra row, the changed words' maps in the last one too (a recolouring's reference)."""
        source = sorted({i for m in self.token_maps for i in m.source_tokens})
        if not source or not all(m.target_tokens for m in self.token_maps):
            return None
        reference = bool(self.settings.recolour) and self.extra_rows > 0
        return LocalBlend(source, [m.target_tokens for m in self.token_maps], reference=reference)

    def _choose_layers(self, self_max_positions: int) -> list[LayerInfo]:
        """Cross layers when maps are injected, words reweighted or blended; small self layers when self maps are."""
        cross = self.settings.cross_steps > 0 or self.reweights or self.local_blend is not None
        return [
            layer
            for layer in attention_layers(self.unet)
            if (layer.kind == "cross" and cross)
            or (layer.kind == "self" and self.settings.self_steps > 0 and layer.resolution**2 <= self_max_positions)
        ]

    # ------------------------------------------------------------------ install / restore

    def prepare(self, current: dict) -> dict:
        """A :class:`ControlProcessor` for every chosen layer, wrapping the reference processor or capture there."""
        processors = {}
        for layer in self.layers:
            inner = current[layer.key]
            if not isinstance(inner, CaptureProcessor) and supported_reference(inner) is None:
                raise ValueError(
                    f"layer {layer.name} uses {type(inner).__name__}; the control stands in for AttnProcessor, "
                    "AttnProcessor2_0 or a tracer's capture only (call unet.set_default_attn_processor() first)"
                )
            processors[layer.key] = ControlProcessor(layer, self, inner)  # a capture: record the edit
        self._traced = any(isinstance(p, CaptureProcessor) for p in current.values())
        return processors

    def add_hooks(self, undo: ExitStack) -> None:
        """The step (as the loop hands it down) before each U-Net call and the shared rows' fill after it."""
        self.clock.listen(self.pipe, undo)
        undo.callback(self.unet.register_forward_pre_hook(self._see_step, with_kwargs=True).remove)
        undo.callback(self.unet.register_forward_hook(self._fill_shared, with_kwargs=True).remove)
        if self.features is not None:
            self.features.install(undo)

    def reset(self) -> None:
        self._index, self._dropped = None, False

    # ------------------------------------------------------------------ steps

    def _see_step(self, module, args, kwargs):
        """Take the call's step from the loop (step 0 starts a sampling); check the batch. During a shared
        step, untraced, return the arguments without the targets' rows."""
        self._index, self._dropped = None, False
        sample = args[0] if args else kwargs["sample"]
        if sample.requires_grad:
            raise ValueError(
                "attention control saw a U-Net pass with gradients (relation guidance?); those passes are not "
                "sampling steps: sample with relation_guidance=0"
            )
        batch = sample.shape[0]
        groups = [first for first, _ in self.halves_of(batch)]  # [source, targets, extra] (× 2 under guidance)
        step, starts = self.clock.take(args[1] if len(args) > 1 else kwargs["timestep"])
        if starts:
            self._start_sampling()
        self.step = step
        if self.step >= self.shared_stop:
            return None
        # traced: the tracer records every row, so compute them and overwrite the targets' outputs
        keep, index = shared_layout(groups, self.images, len(self.token_maps), dropped=not self._traced)
        self._index = torch.tensor(index)
        if self._traced:
            return None
        self._dropped = True
        keep = torch.tensor(keep)
        return take_rows(args, keep, batch), take_rows(kwargs, keep, batch)

    def _fill_shared(self, module, args, kwargs, output):
        """During a shared step, every target row's output is its half's source row's."""
        index, self._index, self._dropped = self._index, None, False
        return output if index is None else fill_output(output, index)

    def _start_sampling(self) -> None:
        timesteps = getattr(getattr(self.pipe, "scheduler", None), "timesteps", None)
        steps = len(timesteps) if timesteps is not None and self.pipe is not self.unet else self.num_steps
        if not steps:
            raise ValueError("cannot tell the number of sampling steps of a bare U-Net; pass num_steps=")
        self.step, self.steps = 0, steps
        # P2P: the first int(fraction × steps) steps are controlled (1e-9: 0.29 × 100 is 28.999…)
        self.cross_stop = math.floor(self.settings.cross_steps * steps + 1e-9)
        self.self_stop = math.floor(self.settings.self_steps * steps + 1e-9)
        self.shared_stop = math.floor(self.settings.shared_fraction * steps + 1e-9)
        self.feature_stop = math.floor(self.settings.feature_fraction * steps + 1e-9)
        pinned = self.settings.pinned_for(null_text=False).pinned_steps  # edit_image chose it; else DDIM's
        self.pinned_stop = math.floor(pinned * steps + 1e-9) if self.source_path else 0
        if self.pinned_stop > len(self.source_path or ()):
            raise ValueError(
                f"source_path holds {len(self.source_path)} latents; pinning {self.pinned_stop} of {steps} steps "
                "needs one after each (an inversion made with as many steps as the edit samples)"
            )
        if self.local_blend is not None:
            self.local_blend.reset(max(layer.resolution for layer in self.layers if layer.kind == "cross"))

    @property
    def needs_step_callback(self) -> bool:
        """Whether the pipeline must call :meth:`step_callback` (shared steps or local blending)."""
        pinned = bool(self.source_path) and self.settings.pinned_steps != 0
        return self.settings.shared_fraction > 0 or self.local_blend is not None or pinned

    def step_callback(self, pipe, step: int, t, tensors: dict) -> dict:
        """A diffusers ``callback_on_step_end`` on the latents (``tensors["latents"]``, rows = images): during
        the first ``shared_steps`` the targets take the source's latents, then local blending (if on). With a
        ``source_path``, during the first ``pinned_steps`` the source row is first put back on it."""
        latents = tensors["latents"]
        if step < max(self.pinned_stop, self.shared_stop):
            latents = latents.clone()  # the pipeline's own tensor is left as it was
        if step < self.pinned_stop:
            latents[0] = self.source_path[step].to(latents)  # (C, H, W): the given image's path after this step
        if step < self.shared_stop:
            targets = len(self.token_maps)
            latents[1 : 1 + targets] = latents[:1]  # (targets, C, H, W) ← the source row
        elif self.local_blend is not None:
            latents = self.local_blend.blend(latents, step, self.steps)
        return {**tensors, "latents": latents}

    # ------------------------------------------------------------------ the edit

    def halves_of(self, batch: int) -> list[tuple[int, str]]:
        """``(first row, half)`` of each group ``[source, *targets, *extra]`` in a U-Net batch (without the
        targets during a shared step whose rows were dropped)."""
        if self._dropped:
            images = self.images - len(self.token_maps)
            return [(0, "cond")] if batch == images else [(0, "uncond"), (images, "cond")]
        if batch == self.images:
            return [(0, "cond")]
        if batch == 2 * self.images:
            return [(0, "uncond"), (self.images, "cond")]
        raise ValueError(
            f"U-Net batch of {batch} rows; the control expects [source, targets, extra] = {self.images} images, "
            f"{self.images} rows unguided or {2 * self.images} under classifier-free guidance"
        )

    def active(self, layer: LayerInfo) -> bool:
        """Whether ``layer``'s maps are edited (or read, by the local blend) at the current step; an
        inactive layer runs the processor it had, fused attention included."""
        blending = (
            self.local_blend is not None and layer.kind == "cross" and layer.resolution == self.local_blend.resolution
        )
        if self._dropped:  # a shared step without the targets' rows: only the blend reads maps
            return blending
        if layer.kind == "self":
            return self.step < self.self_stop
        return self.step < self.cross_stop or self.reweights or blending

    def edit(self, layer: LayerInfo, probs: torch.Tensor, heads: int) -> torch.Tensor:
        """The targets' rows of ``(B*heads, N, K)`` probabilities, edited for the current step."""
        batch = probs.shape[0] // heads
        if layer.kind == "cross" and probs.shape[-1] != self.length:
            raise ValueError(
                f"{probs.shape[-1]} text positions in {layer.name}; the control was built for {self.length}"
            )
        rows = probs.view(batch, heads, *probs.shape[1:])  # (B, h, N, K)
        stop = self.cross_stop if layer.kind == "cross" else self.self_stop
        shared = self.step < self.shared_stop  # the targets take the source's output: their maps do not count
        groups = self.halves_of(batch)
        if self.local_blend is not None and layer.kind == "cross":
            targets = 0 if self._dropped else len(self.token_maps)  # the target rows in this batch
            for first in (first for first, half in groups if half == "cond"):
                last = first + targets + self.extra_rows  # the last extra row: a recolouring's reference
                self.local_blend.add(layer.resolution, rows, first, with_targets=not shared, reference_row=last)
        reweighting = layer.kind == "cross" and self.reweights
        if self._dropped or not (self.step < stop or reweighting):
            return probs  # nothing to edit (no target rows, or only the blend read the maps)
        out = rows.clone()  # edited out of place: autograd-safe, the source rows stay as computed
        for first, half in groups:
            inject = self.step < stop and (half == "cond" or self.settings.halves == "both")
            for j, (token_map, weights) in enumerate(zip(self.token_maps, self.weights, strict=True)):
                row = first + 1 + j
                if inject:
                    mapped = layer.kind == "cross" and half == "cond"  # uncond rows: same negative prompt
                    out[row] = self._inject(rows[first], rows[row], token_map if mapped else None)
                if weights is not None and layer.kind == "cross" and half == "cond":
                    out[row] = out[row] * weights.to(probs)  # (h, N, K) × (K,)
        return out.view_as(probs)  # (B*h, N, K)

    @staticmethod
    def _inject(source: torch.Tensor, target: torch.Tensor, token_map: TokenMap | None) -> torch.Tensor:
        """``α (P_s M) + (1 − α) P_t`` for ``(h, N, K)`` maps; the source's maps themselves without a token map."""
        if token_map is None or token_map.identity:
            return source
        mapped = source @ token_map.matrix.to(source)  # (h, N, K) · (K, K)
        if bool(token_map.alpha.all()):
            return mapped
        alpha = token_map.alpha.to(source)  # (K,)
        return alpha * mapped + (1 - alpha) * target


#: ``crossattn.control(pipe, source, target, cross_steps=0.8, self_steps=0.2, reweight=None, ...)``:
#: the controller class is the context manager.
control = Controller
