"""The same ``trace`` on SD-1.5- and SDXL-shaped U-Nets and on diffusers' ``StableDiffusionPipeline``."""

from __future__ import annotations

import torch

import crossattn
from crossattn.models.tokenizer import load_tokenizer

from .attention_helpers import PROMPT, generator, sd15_unet, sdxl_unet, tiny_sd_pipeline


def run_unet(unet, batch=2, **extra):
    torch.manual_seed(3)
    sample = torch.randn(batch, 4, 8, 8)  # (B, C, h, w) latents
    text = torch.randn(batch, 16, 16)  # (B, T, D)
    with torch.no_grad():
        return unet(sample, 10, encoder_hidden_states=text, **extra).sample


def test_sd15_shaped_unet_with_prompt_given_to_the_tracer():
    unet = sd15_unet()
    plain = run_unet(unet)
    with crossattn.trace(unet, kind="both", tokenizer=load_tokenizer(max_length=16)) as tracer:
        tracer.start_call([PROMPT])  # one image; the U-Net batch of 2 is [uncond, cond]
        traced = run_unet(unet)
    assert torch.equal(plain, traced)
    maps = tracer.maps()
    assert maps.halves == ["cond"] and maps.words[2] == "circle"
    assert len(maps.cross_layers) == 4 and len(maps.self_layers) == 4
    shapes = {maps.meta["layers"][n]["resolution"]: maps.tensors[n].shape for n in maps.cross_layers}
    assert shapes == {8: (1, 1, 1, 64, 16), 4: (1, 1, 1, 16, 16)}
    assert maps.word_map("circle").shape == (8, 8)  # a bare U-Net: image size = latent size


def test_sdxl_shaped_unet_two_transformer_layers_per_block():
    unet = sdxl_unet()
    extra = {"added_cond_kwargs": {"text_embeds": torch.randn(2, 16), "time_ids": torch.randn(2, 6)}}
    plain = run_unet(unet, **extra)
    with crossattn.trace(unet, per_head=True) as tracer:
        traced = run_unet(unet, **extra)
    assert torch.equal(plain, traced)
    maps = tracer.maps()
    assert maps.halves == ["all", "all"]  # no pipeline call seen: every batch row is an image
    assert any(".transformer_blocks.1.attn2" in n for n in maps.layer_names)
    assert len(maps.layer_names) == 2 + 2 * 2 + 2  # down (1 block × 2 layers), up (2 × 2), mid (2)
    for name in maps.layer_names:
        heads = maps.meta["layers"][name]["heads"]
        assert maps.tensors[name].shape[1:3] == (2, heads) and maps.tensors[name].shape[-1] == 16
    assert maps.token_map(5, image=1).shape == (8, 8) and maps.tokens[5] == "<5>"


def test_stable_diffusion_pipeline_from_tiny_parts():
    pipe = tiny_sd_pipeline()
    kwargs = dict(num_inference_steps=2, height=16, width=16, output_type="np")
    plain = pipe(PROMPT, generator=generator(), **kwargs).images
    with crossattn.trace(pipe, guidance_half="both", per_step=True) as tracer:
        traced = pipe(PROMPT, negative_prompt="blurry", generator=generator(), **kwargs).images
        assert type(pipe).__name__ == "StableDiffusionPipeline"
    again = pipe(PROMPT, negative_prompt="blurry", generator=generator(), **kwargs).images
    assert (again == traced).all() and not (plain == traced).all()  # the negative prompt changes the image
    maps = tracer.maps()
    assert maps.halves == ["uncond", "cond"] and maps.words_for(0) == ["blurry"]
    assert maps.image_size == (16, 16)  # latents 8×8 × the VAE's factor 2
    assert sum(t.shape[0] for t in maps.tensors.values()) == 4 * 2
    assert maps.word_map("square", image=1).shape == (16, 16)
    from diffusers import StableDiffusionPipeline

    assert type(pipe) is StableDiffusionPipeline  # the class is restored after the trace
