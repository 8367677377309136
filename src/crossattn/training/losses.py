"""The diffusion training objective (Ho et al., 2020), with the v-target of Salimans & Ho (2022),
optional min-SNR-γ weighting (Hang et al., 2023) and the optional token grounding loss of
:mod:`crossattn.training.grounding_loss` (TokenCompose) for batches that carry word masks.

The forward process and the target come from the training noise scheduler (DDPM on the model's
own schedule), so the loss and every sampler agree on what ``t`` means.
"""

from __future__ import annotations

import torch

from ..attention.record import record_cross_attention
from ..config import TrainingConfig
from .grounding_loss import grounding_loss, signal_weights


def diffusion_loss(unet, text_encoder, noise_scheduler, batch, generator, config: TrainingConfig, empty_ids):
    """Mean (optionally min-SNR weighted) MSE between the U-Net's output and the schedule's target,
    plus ``config.grounding_weight`` × the grounding loss when the batch has ``token_masks``.

    Pixel space takes ``batch["pixel_values"]``; latent families (SD-1.5, SDXL) give ``batch["latents"]``
    (the frozen VAE's, already times ``vae.config.scaling_factor``) and, as ``text_encoder``, a
    :class:`crossattn.training.latent.PromptEncoder`, which returns the U-Net's extra conditioning too
    (SDXL's ``added_cond_kwargs``); the noise, timesteps and target are drawn alike in both spaces."""
    x0 = batch["latents"] if "latents" in batch else batch["pixel_values"]  # (B, C, H, W)
    b, device = x0.shape[0], x0.device
    drop = torch.rand(b, generator=generator) < config.caption_dropout  # (B,)
    noise = torch.randn(x0.shape, generator=generator).to(device)  # (B, C, H, W)
    t = sample_timesteps(b, noise_scheduler.config.num_train_timesteps, config.timestep_bias, generator).to(device)
    noisy = noise_scheduler.add_noise(x0, noise, t)
    kind = noise_scheduler.config.prediction_type
    target = {"epsilon": noise, "sample": x0}.get(kind)
    if target is None:
        target = noise_scheduler.get_velocity(x0, noise, t)
    with torch.set_grad_enabled(any(p.requires_grad for p in text_encoder.parameters())):  # LoRA, token rows
        text, extra = encode_captions(text_encoder, batch, drop.to(device), empty_ids)  # (B, T, D), {...}
    masks = batch.get("token_masks") if config.grounding_weight > 0 else None  # (B, T, H, W)
    with record_cross_attention(unet, enabled=masks is not None) as records:
        pred = unet(noisy, t, encoder_hidden_states=text, **extra).sample  # (B, C, H, W)
    per_sample = (pred.float() - target.float()).pow(2).mean(dim=(1, 2, 3))  # (B,)
    if config.snr_gamma is not None:
        per_sample = per_sample * min_snr_weights(noise_scheduler, t, config.snr_gamma)
    if "loss_weights" in batch:  # DreamBooth's prior_loss_weight on the prior images' items, 1 on the user's
        per_sample = per_sample * batch["loss_weights"]
    loss = per_sample.mean()
    if masks is not None:
        masks = masks * (~drop).to(device)[:, None, None, None]  # a dropped caption names nothing
        loss = loss + config.grounding_weight * grounding_loss(records, masks, signal_weights(noise_scheduler, t))
    return loss


def encode_captions(text_encoder, batch, drop: torch.Tensor, empty_ids) -> tuple[torch.Tensor, dict]:
    """The text states ``(B, T, D)`` and the U-Net's other keyword arguments for a batch, captions
    dropped to ``""`` where ``drop`` (B,) holds: a model's own prompt encoder where it has one (latent
    families, :class:`crossattn.training.latent.PromptEncoder`), else a ``CLIPTextModel`` on ``input_ids``."""
    if hasattr(text_encoder, "encode_batch"):
        return text_encoder.encode_batch(batch, drop)
    ids = torch.where(drop[:, None], empty_ids, batch["input_ids"])  # (B, T)
    return text_encoder(ids)[0], {}


def sample_timesteps(n: int, num_timesteps: int, bias: float, generator: torch.Generator) -> torch.Tensor:
    """``n`` training timesteps with density ∝ t^bias: uniform for 0, tilted towards high noise above.

    High-noise steps are where layout (position, relation) is decided; ``shared/TRIALS.md`` lists
    favouring them as an untried way to learn *where*. Drawn as t = ⌊T·u^(1/(1+bias))⌋, u ~ U(0, 1).
    """
    u = torch.rand(n, generator=generator)  # (n,)
    return (num_timesteps * u ** (1.0 / (1.0 + bias))).long().clamp(max=num_timesteps - 1)


def min_snr_weights(noise_scheduler, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-γ loss weights (Hang et al., 2023): min(SNR, γ)/SNR for ε, min(SNR, γ)/(SNR+1) for v."""
    from diffusers.training_utils import compute_snr

    snr = compute_snr(noise_scheduler, t)  # (B,)
    clipped = torch.clamp(snr, max=gamma)
    if noise_scheduler.config.prediction_type == "v_prediction":
        return clipped / (snr + 1)
    if noise_scheduler.config.prediction_type == "epsilon":
        return clipped / snr.clamp(min=1e-8)
    return clipped
