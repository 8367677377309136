"""``crossattn.trace``: record attention maps while any diffusers pipeline samples.

    with crossattn.trace(pipe, kind="cross") as tracer:
        image = pipe("a red circle left of a blue square").images[0]
    maps = tracer.maps()
    maps.word_map("circle")  # (H, W)

All state lives on the :class:`Tracer`, a :class:`~crossattn.attention.install.ProcessorHook`. On
entry it installs a :class:`CaptureProcessor` on the chosen layers through ``unet.set_attn_processor``
(every other layer keeps its processor object; on SD3 and Flux a joint capture processor of
:mod:`crossattn.attention.joint` on each chosen attention module of ``pipe.transformer``), adds a
forward pre-hook on the denoiser (to see the latent size and, for Flux, the text length) and, for a pipeline, records the arguments of each ``pipe(...)`` call (prompt, negative
prompt, images per prompt) through :func:`~crossattn.attention.steps.watch_calls` (a one-method subclass of
the pipeline's class for the duration, shared with the hooks that are told the sampling step). On
exit — also after an exception — it puts back the very same processor objects, removes the hook and
restores the class. Tracing a pipeline that is already traced raises.
"""

from __future__ import annotations

import inspect
import math
from contextlib import ExitStack

from .dispatch_capture import DispatchCapture, TraceContext, TrueCfgSink, calls_dispatch, calls_sdpa
from .families import family_of, image_tokens, latent_grid, output_size, true_cfg_on
from .install import HookError, ProcessorHook, denoiser_of, installed
from .joint import JointCapture, joint_capture_class
from .layers import LayerInfo, attention_layers, is_joint, select_layers
from .processor import CaptureProcessor, supported_reference
from .steps import WATCHERS, watch_calls
from .store import AttentionStore
from .text_layout import prompt_tokens


class TraceError(HookError):
    """A trace was used in a way that would corrupt another trace or the model."""


def is_traced(unet) -> bool:
    """True when a tracer is on ``unet`` (its capture processors or its hook)."""
    return installed(unet, Tracer)


class Tracer(ProcessorHook):
    """Record attention maps while ``pipe`` samples; use as ``with trace(pipe) as tracer:``.

    ``pipe``: any diffusers pipeline whose ``unet`` is a ``UNet2DConditionModel``, an SD3 or Flux
    pipeline (its joint-attention ``transformer``), or the denoiser itself. ``kind``: ``"cross"``
    (``attn2``; on SD3/Flux the image→text block, layers ``<module>.text``), ``"self"`` (``attn1``; the
    image→image block, ``<module>.image``) or ``"both"``. ``layers``: None (all of that kind), a
    resolution (int, e.g. 16), a glob or regex on layer names, or a list of these. ``per_step`` / ``per_head`` keep that detail (memory grows with steps only
    with ``per_step``). ``guidance_half``: which half of a classifier-free-guided batch to record,
    ``"cond"`` (the prompt), ``"uncond"`` (the negative prompt) or ``"both"``. ``cache_kv`` reuses
    each cross-attention layer's text K/V projections across steps (identical output).
    ``tokenizer`` names the tokens when ``pipe`` has none (a bare U-Net; see :meth:`start_call`).
    Each ``pipe(...)`` call starts a new record; :meth:`maps` returns the last one.
    """

    processor_type = (CaptureProcessor, JointCapture)
    error = TraceError
    noun = "tracer"

    def __init__(
        self,
        pipe,
        kind: str = "cross",
        layers=None,
        per_step: bool = False,
        per_head: bool = False,
        guidance_half: str = "cond",
        cache_kv: bool = True,
        tokenizer=None,
    ):
        self.pipe = pipe
        self.unet = denoiser_of(pipe)  # the denoiser: a U-Net, or an SD3 / Flux transformer
        super().__init__(self.unet)
        self.joint = is_joint(self.unet)
        self.family = family_of(self.unet)  # what the denoiser's family declares (families.py)
        self.context = TraceContext()
        self.kind = kind
        self.layers: list[LayerInfo] = select_layers(attention_layers(self.unet), kind, layers)
        self.store = AttentionStore(guidance_half, per_step=per_step, per_head=per_head)
        self.cache_kv = cache_kv
        self.tokenizer = tokenizer if tokenizer is not None else getattr(pipe, "tokenizer", None)
        self.prompts: list[str | None] | None = None  # one per image, from the last pipeline call
        self.negative_prompts: list[str] | None = None
        self.latent_size: tuple[int, int] | None = None
        self.text_keys = 0  # text keys of the prompt's denoiser calls
        self.output_size: tuple[int, int] | None = None

    # ------------------------------------------------------------------ install / restore

    def check_free(self) -> None:
        watchers = getattr(self.pipe, "__dict__", {}).get(WATCHERS, ())
        if installed(self.unet, Tracer) or any(isinstance(getattr(w, "__self__", None), Tracer) for w in watchers):
            raise TraceError("this pipeline is already being traced; exit the other trace first")

    def prepare(self, current: dict) -> dict:
        """A :class:`CaptureProcessor` for every chosen layer, standing in for its reference processor
        (on a joint transformer, one joint capture per attention module: :meth:`_joint_processors`)."""
        self.store.reset(None)
        if self.joint:
            return self._joint_processors(current)
        processors = {}
        for layer in self.layers:
            mode = supported_reference(current[layer.key])
            if mode is None and (calls_sdpa(current[layer.key]) or calls_dispatch(current[layer.key])):
                names = {layer.kind: layer.name}  # an attn1 / attn2 of a transformer's own processor (Sana's attn2)
                processors[layer.key] = DispatchCapture(
                    names, self.store, self.context, current[layer.key], separate=True
                )
                continue
            if mode is None:
                raise ValueError(
                    f"layer {layer.name} uses {type(current[layer.key]).__name__}; tracing stands in for "
                    "AttnProcessor or AttnProcessor2_0 only (call unet.set_default_attn_processor() first)"
                )
            processors[layer.key] = CaptureProcessor(layer.name, self.store, mode, self.cache_kv)
        return processors

    def _joint_processors(self, current: dict) -> dict:
        """One joint capture processor per chosen module, recording its chosen kinds (cross, self)."""
        kinds: dict[str, dict[str, str]] = {}
        for layer in self.layers:
            kinds.setdefault(layer.key, {})[layer.kind] = layer.name
        processors = {}
        sink = TrueCfgSink(self.store, self.context) if self.family and self.family.true_cfg else self.store
        for key, names in kinds.items():
            capture = joint_capture_class(current[key])
            if capture is not None:  # SD3 / SD3.5 and Flux: their own capture classes (joint.py)
                processors[key] = capture(names, sink, self.context)
            elif calls_dispatch(current[key]):  # Flux.2, Qwen-Image: the one capture point of diffusers' dispatch
                processors[key] = DispatchCapture(names, sink, self.context, current[key], self.family.text_first)
            else:
                raise ValueError(
                    f"layer {key.removesuffix('.processor')} uses {type(current[key]).__name__}; tracing stands in "
                    "for JointAttnProcessor2_0 (SD3), FluxAttnProcessor (Flux) or a processor that calls diffusers' "
                    "dispatch_attention_fn (Flux.2, Qwen-Image)"
                )
        return processors

    def add_hooks(self, undo: ExitStack) -> None:
        """A pre-hook that sees the latent size; for a pipeline, the calls' arguments (:meth:`_see_call`)."""
        undo.callback(self.unet.register_forward_pre_hook(self._see_latents, with_kwargs=True).remove)
        if self.pipe is not self.unet:
            watch_calls(self.pipe, self._see_call, undo)

    # ------------------------------------------------------------------ what the pipeline does

    def _see_call(self, call, pipe, args, kwargs) -> None:
        """Read prompt, negative prompt and images per prompt from a pipeline call."""
        try:
            bound = inspect.signature(call).bind(pipe, *args, **kwargs)
        except TypeError:
            return  # the pipeline itself will report the bad call
        bound.apply_defaults()
        arguments = bound.arguments
        prompt = arguments.get("prompt")
        per_prompt = arguments.get("num_images_per_prompt") or 1
        if prompt is None:  # called with prompt_embeds: the images are known, their words are not
            embeds = arguments.get("prompt_embeds")
            count = embeds.shape[0] if embeds is not None else None
            self.start_call([None] * count if count else None, images_per_prompt=per_prompt)
        else:
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            self.start_call(prompts, arguments.get("negative_prompt"), per_prompt)
        self._note(pipe, arguments)

    def note_call(self, pipe, **kwargs) -> None:
        """Tell the tracer that ``pipe(**kwargs)`` runs next, for a pipeline whose calls it does not see (an
        img2img pipeline ``from_pipe`` made of the traced one): whether its guidance is true CFG, its size."""
        try:
            bound = inspect.signature(type(pipe).__call__).bind(pipe, **kwargs)
        except TypeError:
            return  # the pipeline itself will report the bad call
        bound.apply_defaults()
        self._note(pipe, bound.arguments)

    def _note(self, pipe, arguments: dict) -> None:
        self.context.sequential_cfg = true_cfg_on(self.family, pipe, arguments)  # a second, negative call a step
        self.output_size = output_size(self.family, arguments)  # PixArt-Σ, Sana: resized from a binned size

    def start_call(self, prompts, negative_prompts=None, images_per_prompt: int = 1) -> None:
        """Start a new record for a sampling of ``prompts`` (each giving ``images_per_prompt`` images).

        Called for every ``pipe(...)`` call; call it yourself before running a bare U-Net so the
        tracer knows the prompts and can tell the guidance halves apart.
        """
        if prompts is None:
            self.prompts, self.negative_prompts = None, None
            self.store.reset(None)
            return
        negative = [negative_prompts] * len(prompts) if isinstance(negative_prompts, str | None) else negative_prompts
        self.prompts = [p for p in prompts for _ in range(images_per_prompt)]
        self.negative_prompts = [n or "" for n in negative for _ in range(images_per_prompt)]
        self.store.reset(len(self.prompts))
        self.context.calls = 0
        self.context.sequential_cfg, self.output_size = False, None  # until the call's arguments say (_note)

    def _see_latents(self, module, args, kwargs) -> None:
        """The latent size ``(h, w)`` from the denoiser's input (packed ``(B, N, C)`` tokens: the family's grid,
        :func:`~crossattn.attention.families.latent_grid`), its image token and text lengths, and one more call."""
        sample = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
        self.latent_size = latent_grid(self.family, sample, kwargs)
        states = kwargs.get("encoder_hidden_states")
        self.context.text_length = 0 if states is None else states.shape[1]
        self.context.image_tokens = image_tokens(self.family, sample)
        self.context.calls += 1
        if self.context.half == "cond":  # the prompt's text keys (a true-CFG negative call may have fewer)
            self.text_keys = self.context.text_length

    # ------------------------------------------------------------------ results

    def nbytes(self) -> int:
        """Memory held by the recorded attention (constant in the number of steps unless per_step)."""
        return self.store.nbytes()

    def maps(self):
        """The :class:`~crossattn.attention.maps.AttentionMaps` of the last sampling."""
        from .maps import AttentionMaps

        if not self.store.layers:
            raise ValueError("nothing was recorded; call the pipeline inside the `with trace(...)` block")
        info = {layer.name: layer for layer in self.layers}
        tensors = {name: self.store.tensor(name) for name in info if name in self.store.layers}
        layers = {name: self._layer_meta(info[name], t, self.store.layers[name].heads) for name, t in tensors.items()}
        first = next(iter(self.store.layers.values()))
        meta = {
            "images": self._image_meta(),
            "layers": layers,
            "image_size": list(self.image_size()),
            "steps": first.count,
            "per_step": self.store.per_step,
            "per_head": self.store.per_head,
            "guidance_half": self.store.guidance_half,
            "guided": self.store.guided,
            "joint": self.joint,  # text and image keys in one softmax (SD3, Flux, Flux.2, Qwen-Image)
        }
        return AttentionMaps(tensors, meta)

    def image_size(self) -> tuple[int, int]:
        """Output image size: latent size × the VAE's scale factor (1 for pixel-space pipelines)."""
        if self.output_size is not None:  # sampled at a binned size, then resized to this
            return self.output_size
        scale = getattr(self.pipe, "vae_scale_factor", 1) if self.pipe is not self.unet else 1
        h, w = self.latent_size
        return h * scale, w * scale

    def _layer_meta(self, layer: LayerInfo, tensor, heads: int) -> dict:
        n = tensor.shape[-2]  # query positions of this layer
        height, width = self.latent_size
        factor = math.sqrt(height * width / n)
        h, w = round(height / factor), round(width / factor)
        if h * w != n:
            raise ValueError(f"cannot tell the shape of {n} positions in {layer.name} for a {height}x{width} latent")
        return {"kind": layer.kind, "resolution": layer.resolution, "height": h, "width": w, "heads": heads}

    def _image_meta(self) -> list[dict]:
        """Prompt, tokens and guidance half of every recorded row (uncond rows carry the negative prompt)."""
        images = []
        for i, half in enumerate(self.store.halves()):
            prompt = None
            if self.prompts is not None:
                source = self.negative_prompts if half == "uncond" else self.prompts
                prompt = source[i % len(self.prompts)]
            pipe = self.pipe if self.pipe is not self.unet else None
            tokens, encoders = prompt_tokens(pipe, self.tokenizer, prompt, self.joint, self.text_keys)
            images.append({"prompt": prompt, "tokens": tokens, "half": half})
            if encoders is not None:  # joint models: which encoder made each token
                images[-1]["encoders"] = encoders
        return images


#: ``crossattn.trace(pipe, kind="cross", layers=None, per_step=False, per_head=False,
#: guidance_half="cond")``: the tracer class is the context manager.
trace = Tracer
