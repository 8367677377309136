"""``CrossAttnPipeline``: prompt → CLIP text states → guided denoising loop → image.

A ``diffusers.DiffusionPipeline`` with four components (``unet``, ``text_encoder``,
``tokenizer``, ``scheduler``), so ``save_pretrained`` / ``from_pretrained`` give the usual
diffusers folder. Pixel space: there is no VAE, the U-Net denoises the RGB image itself.

Batch layout under classifier-free guidance (Ho & Salimans, 2022): the U-Net sees
``[negative/unconditional (B), conditional (B)]`` stacked along the batch, the same order as
diffusers' Stable Diffusion pipelines, so attention hooks can tell the halves apart.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any

import torch
from diffusers import DiffusionPipeline
from diffusers.image_processor import VaeImageProcessor
from diffusers.loaders import StableDiffusionLoraLoaderMixin
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from ..attention.steps import announce
from ..config import SamplingConfig, check_strength
from .relation_guidance import RelationGuidance, guide_latents, parse_relation, warn_unparsed
from .tokenizer import WordSpans

OUTPUT_TYPES = ("pil", "np", "pt")


def image_timesteps(scheduler, num_steps: int, strength: float) -> torch.Tensor:
    """The last ``strength`` share of ``scheduler``'s timesteps (at least one), as diffusers' img2img
    pipelines take them (``get_timesteps``); sets the begin index so multistep solvers start there.
    Call after ``scheduler.set_timesteps(num_steps)``; a strength outside (0, 1] is a ``BadArgument``."""
    check_strength(strength)
    kept = max(1, min(int(num_steps * strength), num_steps))
    start = (num_steps - kept) * scheduler.order
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start)
    return scheduler.timesteps[start:]


class CrossAttnPipeline(DiffusionPipeline, StableDiffusionLoraLoaderMixin):
    """Text-to-image sampling with a pixel-space ``UNet2DConditionModel`` and a ``CLIPTextModel``.

    ``load_lora_weights`` (diffusers' Stable Diffusion LoRA loader) works on it unchanged.
    """

    model_cpu_offload_seq = "text_encoder->unet"
    #: the loop tells the hooks on the U-Net each step (:func:`crossattn.attention.steps.announce`)
    announces_steps = True
    _callback_tensor_inputs = ["latents", "prompt_embeds"]

    def __init__(self, unet, text_encoder, tokenizer, scheduler):
        super().__init__()
        self.register_modules(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)
        # Maps [-1, 1] tensors to PIL / numpy / torch outputs; no resizing in pixel space.
        self.image_processor = VaeImageProcessor(vae_scale_factor=1, do_resize=False)

    # ------------------------------------------------------------------ settings

    @property
    def downsample_factor(self) -> int:
        """Height and width must be multiples of this."""
        return 2 ** (len(self.unet.config.block_out_channels) - 1)

    @property
    def max_length(self) -> int:
        """Tokens the text encoder reads, ``<|startoftext|>`` and ``<|endoftext|>`` included."""
        return min(self.tokenizer.model_max_length, self.text_encoder.config.max_position_embeddings)

    def set_scheduler(self, name: str) -> None:
        """Switch the sampler by name (``ddpm``, ``ddim``, ``dpm++``, ``euler``), keeping the schedule."""
        from .model import set_scheduler

        set_scheduler(self, name)

    # ------------------------------------------------------------------ text

    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        """CLIP text states for each prompt: ``(B, T, D)`` with T = :attr:`max_length`."""
        self._warn_truncated(prompts)
        ids = self.tokenizer(
            prompts, padding="max_length", max_length=self.max_length, truncation=True, return_tensors="pt"
        ).input_ids  # (B, T)
        return self.text_encoder(ids.to(self._execution_device))[0]  # (B, T, D)

    def _warn_truncated(self, prompts: list[str]) -> None:
        """Warn, naming the dropped words, when a prompt is longer than the text encoder reads."""
        keep = self.max_length - 2  # room left by <|startoftext|> and <|endoftext|>
        for prompt in dict.fromkeys(prompts):  # each distinct prompt once (prompts repeat per image)
            ids = self.tokenizer(prompt, add_special_tokens=False, verbose=False).input_ids  # our warning, not theirs
            if len(ids) > keep:
                dropped = self.tokenizer.decode(ids[keep:]).strip()
                warnings.warn(
                    f"prompt {prompt!r} is longer than the {self.max_length} tokens the text encoder "
                    f"reads; dropped: {dropped!r}",
                    stacklevel=3,
                )

    # ------------------------------------------------------------------ checks

    def check_inputs(
        self, prompts, negative, steps, height, width, output_type, generator, images_per_prompt=1
    ) -> None:
        """Raise ``ValueError`` naming the bad value and what is accepted."""
        if not all(isinstance(p, str) for p in prompts) or not prompts:
            raise ValueError(f"prompt must be a string or a non-empty list of strings, got {prompts!r}")
        if negative is not None and len(negative) != len(prompts):
            raise ValueError(f"{len(negative)} negative prompts for {len(prompts)} prompts; give one or one each")
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"num_inference_steps must be a whole number >= 1, got {steps!r}")
        f = self.downsample_factor
        if height % f or width % f or height <= 0 or width <= 0:
            raise ValueError(f"height and width must be positive multiples of {f} for this U-Net, got {height}x{width}")
        if isinstance(generator, list) and len(generator) not in (1, len(prompts) * images_per_prompt):
            raise ValueError(
                f"{len(generator)} generators for {len(prompts) * images_per_prompt} images; give one or one per image"
            )
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type {output_type!r}; accepted: {', '.join(OUTPUT_TYPES)}")
        for p in prompts:
            if not p.strip():
                warnings.warn("empty prompt: sampling unconditionally", stacklevel=3)

    # ------------------------------------------------------------------ sampling pieces

    def prepare_latents(self, batch: int, height: int, width: int, generator, dtype) -> torch.Tensor:
        """Initial noise ``(B, C, H, W)`` scaled by the scheduler's ``init_noise_sigma``."""
        shape = (batch, self.unet.config.in_channels, height, width)
        noise = randn_tensor(shape, generator=generator, device=self._execution_device, dtype=dtype)
        return noise * self.scheduler.init_noise_sigma

    def start(self, batch, height, width, num_steps, generator, dtype, image=None, strength=1.0, latents=None):
        """Set the schedule; return the first latents and the timesteps to run: pure noise (or the
        ``latents`` given) and every step, or ``image`` noised to the last ``strength`` share of the steps."""
        self.scheduler.set_timesteps(num_steps, device=self._execution_device)
        if latents is not None:
            if latents.shape != (batch, self.unet.config.in_channels, height, width):
                raise ValueError(
                    f"latents of shape {tuple(latents.shape)}; expected {(batch, self.unet.config.in_channels, height, width)}"
                )
            return latents.to(self._execution_device, dtype) * self.scheduler.init_noise_sigma, self.scheduler.timesteps
        if image is None:
            return self.prepare_latents(batch, height, width, generator, dtype), self.scheduler.timesteps
        timesteps = self.image_timesteps(num_steps, strength)
        return self.noised_image(image, batch, timesteps[:1], generator, dtype), timesteps

    def image_timesteps(self, num_steps: int, strength: float) -> torch.Tensor:
        """:func:`image_timesteps` of this pipeline's scheduler."""
        return image_timesteps(self.scheduler, num_steps, strength)

    def noised_image(self, image: torch.Tensor, batch: int, timestep, generator, dtype) -> torch.Tensor:
        """``image`` ``(1 or B, C, H, W)`` in [-1, 1], noised to ``timestep`` by the scheduler's ``add_noise``."""
        image = image.to(self._execution_device, dtype)
        image = image.expand(batch, -1, -1, -1) if image.shape[0] == 1 else image  # (B, C, H, W)
        noise = randn_tensor(image.shape, generator=generator, device=self._execution_device, dtype=image.dtype)
        return self.scheduler.add_noise(image, noise, timestep.repeat(batch))

    def step_kwargs(self, generator) -> dict[str, Any]:
        """Pass the generator to schedulers whose ``step`` draws noise (DDPM, ancestral)."""
        accepted = inspect.signature(self.scheduler.step).parameters
        return {"generator": generator} if "generator" in accepted else {}

    def predict_noise(self, latents, t, text_states, guidance_scale: float) -> torch.Tensor:
        """The U-Net's prediction for one step, guided when ``guidance_scale > 1``."""
        guided = guidance_scale > 1
        model_input = torch.cat([latents] * 2) if guided else latents  # (2B or B, C, H, W)
        model_input = self.scheduler.scale_model_input(model_input, t)
        pred = self.unet(model_input, t, encoder_hidden_states=text_states).sample
        if not guided:
            return pred
        uncond, cond = pred.chunk(2)  # each (B, C, H, W)
        return uncond + guidance_scale * (cond - uncond)

    def call_inputs(self, prompt, negative_prompt, steps, guidance_scale, per_prompt, generator, size, output_type,
                    callback_inputs, relation_guidance):  # fmt: skip
        """``__call__``'s inputs checked and expanded: ``(prompts, negatives, height, width, relation)``, one
        prompt and one negative per image, ``relation`` the :class:`RelationGuidance` of ``relation_guidance``;
        ``size`` is ``(height, width, image, latents)`` as given."""
        relation = RelationGuidance(scale=relation_guidance)  # checks the value
        height, width, image, latents = size
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        negative = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else negative_prompt
        if image is not None and latents is not None:
            raise ValueError("give image= (noised to strength) or latents= (the starting noise), not both")
        if image is not None or latents is not None:
            height, width = (image if latents is None else latents).shape[-2:]
        height = height or self.unet.config.sample_size
        width = width or self.unet.config.sample_size
        self.check_inputs(prompts, negative, steps, height, width, output_type, generator, per_prompt)
        bad = set(callback_inputs or []) - set(self._callback_tensor_inputs)
        if bad:
            raise ValueError(f"callback tensor inputs {sorted(bad)}; accepted: {self._callback_tensor_inputs}")
        if negative is not None and guidance_scale <= 1:
            warnings.warn("negative_prompt has no effect with guidance_scale <= 1", stacklevel=3)
        negative = negative or [""] * len(prompts)
        prompts = [p for p in prompts for _ in range(per_prompt)]
        negative = [n for n in negative for _ in range(per_prompt)]
        return prompts, negative, height, width, relation

    # ------------------------------------------------------------------ main entry

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        num_inference_steps: int = SamplingConfig.steps,
        guidance_scale: float = SamplingConfig.guidance_scale,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        height: int | None = None,
        width: int | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[Any, int, Any, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        relation_guidance: float = RelationGuidance.scale,
        image: torch.Tensor | None = None,
        strength: float = 1.0,
        latents: torch.Tensor | None = None,
    ):
        """Sample images for ``prompt``.

        ``callback_on_step_end(pipe, step, t, kwargs)`` is called after every scheduler step
        with ``kwargs`` holding the tensors named in ``callback_on_step_end_tensor_inputs``
        (default ``["latents"]``); returned tensors replace them, as in diffusers.
        ``relation_guidance`` steers ``PHRASE RELATION PHRASE`` prompts ("a red circle left of a blue
        square") in the first steps so the relation holds; 0 = unsteered. Other prompts are untouched;
        one naming a relation it cannot read gets a warning (:mod:`crossattn.models.relation_guidance`).
        ``image``: start from this image, ``(1 or B, C, H, W)`` in [-1, 1], instead of pure noise: it is
        noised to the timestep ``strength`` names and only the last ``strength`` share of the steps run
        (SDEdit, Meng et al., 2022; as diffusers' img2img pipelines do); its size sets the output's.
        ``latents``: the starting noise ``(B, C, H, W)`` instead of drawn noise (e.g. an inverted image), as
        in diffusers; scaled by the scheduler's ``init_noise_sigma``.
        Returns an ``ImagePipelineOutput`` (``.images``) or, with ``return_dict=False``, a tuple.
        """
        prompts, negative, height, width, relation = self.call_inputs(
            prompt, negative_prompt, num_inference_steps, guidance_scale, num_images_per_prompt, generator,
            (height, width, image, latents), output_type, callback_on_step_end_tensor_inputs, relation_guidance,
        )  # fmt: skip
        # One text-encoder pass for both halves: [negative (B), prompt (B)] → (2B, T, D) when guided.
        text_states = self.encode_prompt(negative + prompts if guidance_scale > 1 else prompts)
        latents, timesteps = self.start(
            len(prompts), height, width, num_inference_steps, generator, text_states.dtype, image, strength, latents
        )
        steps_run = num_inference_steps if image is None else len(timesteps)
        steer = self.relation_steering(prompts, text_states[-len(prompts) :], relation, steps_run)
        latents = self.denoise(
            latents, text_states, guidance_scale, generator, callback_on_step_end,
            callback_on_step_end_tensor_inputs or ["latents"], steer, timesteps,
        )  # fmt: skip
        image = self.image_processor.postprocess(latents.float(), output_type=output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=image) if return_dict else (image,)

    def relation_steering(self, prompts, cond_states, config: RelationGuidance, num_steps: int):
        """``steer(i, t, latents) → latents``: relation guidance for sampling step ``i``; None when no
        prompt names a relation or guidance is off. ``cond_states``: the prompts' ``(B, T, D)`` states."""
        guided = config.guided_steps(num_steps)
        spans = WordSpans(self.tokenizer, self.max_length)
        parses = [parse_relation(p, spans) for p in prompts] if guided else []
        if parses:
            warn_unparsed(prompts, parses)
        targets = [parse.target for parse in parses]
        if not any(targets):
            return None

        def steer(i: int, t, latents):
            return guide_latents(self, latents, t, cond_states, targets, config) if i < guided else latents

        return steer

    def denoise(
        self, latents, text_states, guidance_scale, generator, callback, callback_inputs, steer=None, timesteps=None
    ):
        """The sampling loop over ``timesteps`` (default: the scheduler's all): tell the hooks the step,
        (steer,) predict, guide, step; call back after every step."""
        extra = self.step_kwargs(generator)
        timesteps = self.scheduler.timesteps if timesteps is None else timesteps
        for i, t in enumerate(self.progress_bar(timesteps)):
            announce(self, i)
            if steer is not None:
                latents = steer(i, t, latents)
            pred = self.predict_noise(latents, t, text_states, guidance_scale)
            latents = self.scheduler.step(pred, t, latents, **extra).prev_sample
            if callback is not None:
                local = {"latents": latents, "prompt_embeds": text_states}
                out = callback(self, i, t, {k: local[k] for k in callback_inputs}) or {}
                latents = out.get("latents", latents)
        return latents
