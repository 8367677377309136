"""Tiny models for the attention tests (our pipeline is conftest's ``tiny_pipe``): SD-1.5- and SDXL-shaped U-Nets, a tiny
``StableDiffusionPipeline`` from random components. Nothing is downloaded."""

from __future__ import annotations

import torch

from .conftest import generator, tiny_config

__all__ = ["PROMPT", "generator", "sd15_unet", "sdxl_unet", "tiny_sd_pipeline", "tiny_vae"]

PROMPT = "a red circle left of a blue square"


#: What the SD-1.5- and SDXL-shaped test U-Nets share: 4-channel 8×8 latents, two levels, text width 16.
LATENT_UNET = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    block_out_channels=(16, 32),
    layers_per_block=1,
    cross_attention_dim=16,
    norm_num_groups=8,
)


def sd15_unet():
    """A Stable-Diffusion-1.5-shaped latent U-Net (4 channels, cross-attention blocks), tiny."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        **LATENT_UNET,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=2,
    )


def sdxl_unet():
    """An SDXL-shaped U-Net: ``text_time`` added conditioning, 2 transformer layers per block, linear projection."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        **LATENT_UNET,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + 16,
    )


def tiny_vae(**overrides):
    """A two-level ``AutoencoderKL`` (``vae_scale_factor`` 2), 4 latent channels, channels 8."""
    from diffusers import AutoencoderKL

    values = dict(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 8),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    )
    values.update(overrides)
    return AutoencoderKL(**values)


def tiny_sd_pipeline():
    """diffusers' own ``StableDiffusionPipeline`` from tiny random parts and the shipped tokenizer."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from crossattn.models.model import build_text_encoder
    from crossattn.models.tokenizer import load_tokenizer

    torch.manual_seed(0)
    vae = tiny_vae(sample_size=16)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=build_text_encoder(tiny_config()),
        tokenizer=load_tokenizer(max_length=16),
        unet=sd15_unet(),
        scheduler=DDIMScheduler(steps_offset=1, clip_sample=False),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
