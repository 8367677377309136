"""Fine-tuning the joint-attention transformers (SD3 / SD3.5, Flux.1) in the one latent loop: the rectified-flow
objective, their prompt conditioning, and LoRA on the transformer's attention, as diffusers'
``train_dreambooth_lora_sd3.py`` / ``train_dreambooth_lora_flux.py`` do them.

Rectified flow (Liu et al., 2023; Esser et al., "Scaling Rectified Flow Transformers", ICML 2024, = SD3) moves a
latent ``x0`` in a straight line to noise ``ε``:

```
x0 (B, C, h, w) = (VAE mean − shift_factor) × scaling_factor     (cached once, crossattn.training.latent)
u ~ density(weighting_scheme)  (logit-normal: sigmoid(N(m, s)), SD3 paper §3.1) ── index = ⌊u · 1000⌋
σ = scheduler.sigmas[index], t = scheduler.timesteps[index]     (the folder's FlowMatchEulerDiscreteScheduler, shifted)
x_σ = (1 − σ) x0 + σ ε          target v = ε − x0               (the velocity the Euler sampler integrates)
loss = mean_B mean_CHW w(σ) · (transformer(x_σ, t, text) − v)²    w: compute_loss_weighting_for_sd3 (1 unless asked)
```

Flux packs ``x_σ`` into 2×2 patches ``(B, h/2·w/2, 4C)`` with image positions ``img_ids`` and zero ``txt_ids``, takes
``t / 1000`` and, for guidance-distilled ``[dev]`` weights (``guidance_embeds``), the guidance the script trains at;
its output is unpacked before the loss. Every draw comes from the step's generator (``crossattn.training.batching``),
so a resumed run continues as an uninterrupted one. The SD3 script's default ``--precondition_outputs 1`` is not
taken: the issue's (and the Flux script's) target is ``ε − x0`` (preconditioning only reweights it by σ²).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import BadArgument
from .batching import CaptionCollate

#: The pipeline classes (``model_index.json``'s ``_class_name``) trained with the flow-matching objective.
FLOW_PIPELINES = ("StableDiffusion3Pipeline", "FluxPipeline")

#: The attention projections LoRA adapts (the scripts' default ``target_modules``; Flux's script also adds the
#: feed-forwards): image stream ``attn.to_*``, text stream ``attn.add_*`` / ``attn.to_add_out``. SD3.5's image-only
#: ``attn2`` is not matched (peft matches whole name parts).
TRANSFORMER_TARGETS = (
    "attn.to_q",
    "attn.to_k",
    "attn.to_v",
    "attn.to_out.0",
    "attn.add_q_proj",
    "attn.add_k_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
)

#: T5 text length each family's pipeline encodes prompts at by default (``max_sequence_length``): the training
#: conditioning and the validation samples then have the same keys.
T5_LENGTH = {"StableDiffusion3Pipeline": 256, "FluxPipeline": 512}


@dataclass(frozen=True)
class FlowSettings:
    """The timestep density and loss weighting (diffusers' ``--weighting_scheme``, ``--logit_mean``,
    ``--logit_std``, ``--mode_scale``) and Flux [dev]'s training guidance (``--guidance_scale``)."""

    weighting_scheme: str = "logit_normal"  # "logit_normal", "mode", "sigma_sqrt", "cosmap" or "none" (uniform)
    logit_mean: float = 0.0
    logit_std: float = 1.0
    mode_scale: float = 1.29
    guidance: float = 3.5  # only where the transformer embeds guidance (Flux.1 [dev])

    def __post_init__(self) -> None:
        schemes = ("logit_normal", "mode", "sigma_sqrt", "cosmap", "none")
        if self.weighting_scheme not in schemes:
            raise BadArgument(f"weighting scheme {self.weighting_scheme!r} is not one of {', '.join(schemes)}")


#: Each family's defaults, as its diffusers script has them (SD3: logit-normal, the SD3 paper's best; Flux: uniform).
FAMILY_SETTINGS = {"StableDiffusion3Pipeline": FlowSettings(), "FluxPipeline": FlowSettings("none")}


def refuse_unsupported(args, family: str) -> None:
    """``finetune``'s flags that do not apply to a joint transformer: one :class:`BadArgument` naming the flag,
    the family and what is accepted (LoRA rank, steps, rates, data, validation, prior images, checkpoints)."""
    bad = [
        ("--train-text-encoder", args.train_text_encoder),
        ("--new-word", bool(args.new_word)),
        ("--lora-convs", bool(args.lora_convs)),
        ("--embedding-lr", args.embedding_lr is not None),
    ]
    for flag, given in bad:
        if given:
            raise BadArgument(
                f"{flag} is not supported on a {family} folder: its LoRA adapts the transformer's attention only "
                "(no text-encoder adapters, no new-word rows, no convolutions); accepted there: --lora RANK, --steps, "
                "--lr, --batch-size, --validation-prompt/--validation-every, --class-prompt, --gradient-checkpointing"
            )


def add_transformer_lora(pipe, rank: int, alpha: float | None = None) -> None:
    """Freeze every model of the pipeline and add a trainable rank-``rank`` LoRA (peft, Gaussian init, alpha =
    rank) on the transformer's attention projections (:data:`TRANSFORMER_TARGETS`)."""
    from .lora import lora_config

    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.requires_grad_(False)
    pipe.transformer.add_adapter(lora_config(rank, TRANSFORMER_TARGETS, alpha))


def hold_frozen(pipe, device, mixed_precision: str) -> None:
    """Every model of the pipeline frozen, in eval mode, on ``device``; under fp16 / bf16 mixed precision held in
    that type (the scripts' ``weight_dtype``) except the VAE (float32, as the SD3 script keeps it). diffusers' notice
    that a cast ``to()`` may differ from ``from_pretrained``'s is silenced: these models keep no module in float32."""
    from diffusers.utils import logging as diffusers_logging

    held = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision, torch.float32)
    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        for name, component in pipe.components.items():
            if isinstance(component, torch.nn.Module):
                component.requires_grad_(False).eval().to(device, torch.float32 if name == "vae" else held)
    finally:
        diffusers_logging.set_verbosity(level)


def save_transformer_lora(pipe, folder) -> None:
    """The transformer's adapter through the family's own ``save_lora_weights`` (``transformer.`` keys, peft
    config as metadata), which ``StableDiffusion3Pipeline`` / ``FluxPipeline.load_lora_weights`` read."""
    from peft.utils import get_peft_model_state_dict

    transformer = pipe.transformer
    type(pipe).save_lora_weights(
        str(folder),
        transformer_lora_layers=get_peft_model_state_dict(transformer),
        transformer_lora_adapter_metadata=transformer.peft_config["default"].to_dict(),
        safe_serialization=True,
    )


def flow_towers(pipe) -> list[tuple]:
    """``(tokenizer, encoder or None, length)`` per text input of the family, in its ``input_ids`` order: SD3's
    CLIP-L, CLIP-G and T5 (None when the folder has no T5: the pipeline feeds zeros), Flux's CLIP and T5."""
    family = type(pipe).__name__
    clip = pipe.tokenizer.model_max_length
    if family == "FluxPipeline":
        return [(pipe.tokenizer, pipe.text_encoder, clip), (pipe.tokenizer_2, pipe.text_encoder_2, T5_LENGTH[family])]
    towers = [(pipe.tokenizer, pipe.text_encoder, clip), (pipe.tokenizer_2, pipe.text_encoder_2, clip)]
    if pipe.tokenizer_3 is not None and pipe.text_encoder_3 is not None:
        towers.append((pipe.tokenizer_3, pipe.text_encoder_3, T5_LENGTH[family]))
    return towers


class TowerCollate(CaptionCollate):
    """:class:`~crossattn.training.batching.CaptionCollate` (latents, ``input_ids``, prior weights) with the other
    towers' ids at their own lengths: ``input_ids_2``, ``input_ids_3`` (T5 pads to its ``max_sequence_length``)."""

    def __init__(self, towers: list[tuple]):
        super().__init__(towers[0][0], towers[0][2])
        self.more = [(tokenizer, length) for tokenizer, _, length in towers[1:]]

    def tower_ids(self, n: int, text: str) -> list[int]:
        key = (n, text)
        if key not in self.cache:
            tokenizer, length = self.more[n - 2]
            self.cache[key] = tokenizer(text, padding="max_length", max_length=length, truncation=True).input_ids
        return self.cache[key]

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        batch = super().__call__(items)
        for n in range(2, 2 + len(self.more)):
            batch[f"input_ids_{n}"] = torch.tensor([self.tower_ids(n, it["text"]) for it in items])  # (B, T_n)
        return batch


def empty_ids(towers: list[tuple], device) -> list[torch.Tensor]:
    """Each tower's ids of ``""`` (caption dropout: the unconditional prompt of classifier-free guidance), (1, T_n)."""
    return [
        torch.tensor(tok("", padding="max_length", max_length=length, truncation=True).input_ids, device=device)[None]
        for tok, _, length in towers
    ]


class FlowPromptEncoder(torch.nn.Module):
    """Captions (ids per tower) → the transformer's conditioning, as the family pipeline's ``encode_prompt``:

    - SD3: CLIP-L's and CLIP-G's penultimate states joined along features ``(B, 77, 768+1280)``, zero-padded to
      T5's width, then T5's states (or zeros) along the sequence ``(B, 77+256, 4096)``; pooled = both towers'
      projected pooled outputs joined ``(B, 2048)``.
    - Flux: T5's last states ``(B, 512, 4096)``; pooled = CLIP's pooler output ``(B, 768)``; ``txt_ids`` zeros ``(T, 3)``.
    """

    def __init__(self, family: str, encoders: list, empties: list[torch.Tensor], t5_width: int, t5_length: int):
        super().__init__()
        self.family, self.encoders, self.empties = family, torch.nn.ModuleList(encoders), empties
        self.t5_width, self.t5_length = t5_width, t5_length  # SD3 without T5: the zeros' shape (joint_attention_dim)

    def encode_batch(self, batch: dict, drop: torch.Tensor) -> tuple[torch.Tensor, dict]:
        keys = ("input_ids", "input_ids_2", "input_ids_3")
        ids = [torch.where(drop[:, None], e, batch[k]) for k, e in zip(keys, self.empties, strict=False)]  # (B, T_n)
        if self.family == "FluxPipeline":
            pooled = self.encoders[0](ids[0], output_hidden_states=False).pooler_output  # (B, P)
            states = self.encoders[1](ids[1], output_hidden_states=False)[0]  # (B, T5, D)
            txt_ids = torch.zeros(states.shape[1], 3, device=states.device, dtype=states.dtype)  # (T5, 3)
            return states, {"pooled_projections": pooled, "txt_ids": txt_ids}
        clip_states, pooled = [], []
        for encoder, tower_ids in zip(self.encoders[:2], ids[:2], strict=True):
            out = encoder(tower_ids, output_hidden_states=True)
            clip_states.append(out.hidden_states[-2])  # (B, 77, D_i)
            pooled.append(out[0])  # (B, P_i) the projected pooled output
        clip = torch.cat(clip_states, dim=-1)  # (B, 77, D_1 + D_2)
        if len(self.encoders) > 2:
            t5 = self.encoders[2](ids[2])[0]  # (B, T5, D_t5)
        else:
            t5 = clip.new_zeros(clip.shape[0], self.t5_length, self.t5_width)  # (B, T5, joint_attention_dim)
        clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))  # (B, 77, D_t5)
        return torch.cat([clip, t5], dim=-2), {"pooled_projections": torch.cat(pooled, dim=-1)}  # (B, 77+T5, D_t5)


def prompt_encoder(pipe, device) -> FlowPromptEncoder:
    """The :class:`FlowPromptEncoder` of a loaded SD3 / Flux pipeline (its frozen encoders, moved to ``device``)."""
    family, towers = type(pipe).__name__, flow_towers(pipe)
    encoders = [encoder.to(device) for _, encoder, _ in towers]
    width = pipe.transformer.config.joint_attention_dim
    return FlowPromptEncoder(family, encoders, empty_ids(towers, device), width, T5_LENGTH[family])


def noise_schedule(pipe):
    """A copy of the folder's ``FlowMatchEulerDiscreteScheduler`` for training (the scripts' ``noise_scheduler_copy``):
    its 1,000 training ``timesteps`` and shifted ``sigmas``, never touched by sampling's ``set_timesteps``."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)


def draw_sigmas(scheduler, settings: FlowSettings, b: int, generator: torch.Generator):
    """``(timesteps (B,), sigmas (B,))`` as the scripts draw them: ``u`` from the density, index ⌊u · N⌋ into the
    training schedule (the scripts' ``get_sigmas`` looks each timestep's sigma up; the index is that position)."""
    from diffusers.training_utils import compute_density_for_timestep_sampling

    u = compute_density_for_timestep_sampling(
        settings.weighting_scheme,
        b,
        logit_mean=settings.logit_mean,
        logit_std=settings.logit_std,
        mode_scale=settings.mode_scale,
        generator=generator,
    )  # (B,) in [0, 1)
    index = (u * scheduler.config.num_train_timesteps).long()
    return scheduler.timesteps[index], scheduler.sigmas[index]


def flow_matching_loss(transformer, text_encoder, scheduler, batch, generator, config, settings: FlowSettings):
    """The rectified-flow loss of one micro-batch (see the module doc); ``batch["latents"]`` the cached, shifted and
    scaled VAE latents, ``text_encoder`` a :class:`FlowPromptEncoder`; prior images' ``loss_weights`` weigh their
    items as in :func:`crossattn.training.losses.diffusion_loss`."""
    x0 = batch["latents"]  # (B, C, h, w)
    b, device = x0.shape[0], x0.device
    drop = torch.rand(b, generator=generator) < config.caption_dropout  # (B,)
    noise = torch.randn(x0.shape, generator=generator).to(device)  # (B, C, h, w)
    timesteps, sigmas = draw_sigmas(scheduler, settings, b, generator)
    timesteps, sigma = timesteps.to(device), sigmas.to(device, x0.dtype)[:, None, None, None]  # (B, 1, 1, 1)
    noisy = (1.0 - sigma) * x0 + sigma * noise  # (B, C, h, w)
    with torch.set_grad_enabled(any(p.requires_grad for p in text_encoder.parameters())):
        states, extra = text_encoder.encode_batch(batch, drop.to(device))  # (B, T, D), pooled (+ Flux txt_ids)
    pred = denoise(transformer, noisy, timesteps, states, extra, settings)  # (B, C, h, w)
    target = noise - x0
    weighting = compute_weighting(settings, sigma)  # (B, 1, 1, 1)
    per_sample = (weighting.float() * (pred.float() - target.float()) ** 2).reshape(b, -1).mean(dim=1)  # (B,)
    if "loss_weights" in batch:  # DreamBooth's prior_loss_weight on the prior images' items, 1 on the user's
        per_sample = per_sample * batch["loss_weights"]
    return per_sample.mean()


def compute_weighting(settings: FlowSettings, sigma: torch.Tensor) -> torch.Tensor:
    from diffusers.training_utils import compute_loss_weighting_for_sd3

    return compute_loss_weighting_for_sd3(settings.weighting_scheme, sigmas=sigma)


def denoise(transformer, noisy, timesteps, states, extra: dict, settings: FlowSettings) -> torch.Tensor:
    """The transformer's velocity for ``noisy`` (B, C, h, w): SD3 directly; Flux on 2×2-packed tokens with image
    positions, ``t / 1000`` and (guidance-distilled weights) the training guidance, unpacked again."""
    if "txt_ids" not in extra:  # SD3
        return transformer(hidden_states=noisy, timestep=timesteps, encoder_hidden_states=states, **extra)[0]
    from diffusers import FluxPipeline

    b, c, h, w = noisy.shape
    packed = FluxPipeline._pack_latents(noisy, b, c, h, w)  # (B, h/2 · w/2, 4C)
    img_ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, noisy.device, noisy.dtype)  # (h/2 · w/2, 3)
    guidance = None
    if getattr(transformer.config, "guidance_embeds", False):
        guidance = torch.full((b,), settings.guidance, device=noisy.device)  # (B,)
    out = transformer(
        hidden_states=packed,
        timestep=timesteps / 1000,
        guidance=guidance,
        encoder_hidden_states=states,
        img_ids=img_ids,
        **extra,
    )[0]  # (B, h/2 · w/2, 4C)
    return unpack(out, h, w)


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Flux's packed ``(B, h/2 · w/2, 4C)`` tokens back to latents ``(B, C, h, w)`` (``FluxPipeline._unpack_latents``
    takes the pixel size; here the latent one, with scale factor 1)."""
    from diffusers import FluxPipeline

    return FluxPipeline._unpack_latents(tokens, h, w, 1)
