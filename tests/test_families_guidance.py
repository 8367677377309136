"""The user's guidance reaches the sampler on every family: Qwen-Image guides by true CFG (``true_cfg_scale`` with a
negative prompt; its ``guidance_scale`` feeds only guidance-distilled transformers), so every crossattn surface's
pipeline call (:func:`crossattn.sampling.run.call_kwargs`: generate, maps, serve; :func:`crossattn.maps_of_image`)
sends ``--guidance`` there, with "" as the negative prompt when none is given, and the traced maps stay the prompt's."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from crossattn.attention.families import FAMILIES, guided_arguments
from crossattn.attention.trace import trace
from crossattn.sampling import ImageJob, MapsOptions, SamplingRequest
from crossattn.sampling.run import call_kwargs, sample

from .family_pipelines import build_family

PROMPT = "a red circle"


class Stopped(Exception):
    """Raised by a stand-in to stop a run once it has seen what it was given."""


@pytest.fixture(scope="module")
def qwen():
    return build_family("qwenimage")


def request(guidance: float, **fields) -> SamplingRequest:
    return SamplingRequest((PROMPT,), guidance=guidance, steps=2, height=32, width=32, **fields)


def crossattn_image(pipe, guidance: float, **fields):
    """The image (and maps) a crossattn surface samples: :func:`crossattn.sampling.run.sample`."""
    job = ImageJob(PROMPT, 0, 0, None, None, None)
    images, maps = sample(pipe, [job], request(guidance, **fields))
    return np.asarray(images[0]), maps


def stock_image(pipe, **kwargs):
    """The stock pipeline's image, seeded as crossattn seeds it."""
    generator = torch.Generator(device="cpu").manual_seed(0)
    image = pipe(prompt=[PROMPT], generator=[generator], num_inference_steps=2, height=32, width=32, **kwargs)
    return np.asarray(image.images[0])


def test_qwen_image_guidance_is_true_cfg(qwen):
    """Two guidance values draw two images, each the stock pipeline's with ``true_cfg_scale`` and a "" negative."""
    low, _ = crossattn_image(qwen, 2.0)
    high, _ = crossattn_image(qwen, 6.0)
    assert not np.array_equal(low, high)
    assert np.array_equal(high, stock_image(qwen, true_cfg_scale=6.0, negative_prompt=""))
    assert np.array_equal(low, stock_image(qwen, true_cfg_scale=2.0, negative_prompt=""))


def test_qwen_image_guidance_with_a_negative_prompt_and_unguided(qwen):
    kwargs = call_kwargs(qwen, request(5.0, negative_prompt="a blue square"))
    assert kwargs["true_cfg_scale"] == 5.0 and kwargs["negative_prompt"] == "a blue square"
    assert "guidance_scale" not in kwargs  # ignored (with a warning) by a transformer that is not distilled
    assert "negative_prompt" not in call_kwargs(qwen, request(1.0))  # guidance 1: one transformer call a step


def test_traced_qwen_image_maps_are_the_prompts_call(qwen):
    """The negative pass ("" here) is kept apart: the maps equal the stock pipeline's traced prompt half."""
    image, maps = crossattn_image(qwen, 4.0, maps=MapsOptions())
    with trace(qwen, kind="cross") as tracer:
        stock = stock_image(qwen, true_cfg_scale=4.0, negative_prompt="")
    assert np.array_equal(image, stock) and maps.meta["guided"]
    assert [i["half"] for i in maps.meta["images"]] == ["cond"] and maps.words == PROMPT.split()
    for layer, tensor in tracer.maps().tensors.items():
        assert torch.equal(maps.tensors[layer], tensor), layer


def test_given_image_guidance_reaches_qwen_images_img2img(qwen, picture, monkeypatch):
    """``maps --image`` (and the explorer's given image): the img2img call gets the true-CFG arguments (the call
    itself is not run: at the model's 256² it is seconds; ``denoise`` hands ``settings`` to it unchanged)."""
    import crossattn.sampling.given_image as given

    seen = {}

    def denoise(pipe, tracer, latents, prompt, strength, generator, settings):
        seen.update(settings)
        raise Stopped

    monkeypatch.setattr(given, "denoise", denoise)
    with pytest.raises(Stopped):
        given.maps_of_image(qwen, picture, PROMPT, num_inference_steps=2, guidance_scale=6.0)
    assert seen == {"num_inference_steps": 2, "true_cfg_scale": 6.0, "negative_prompt": ""}


def test_guidance_goes_where_each_family_reads_it():
    """Only Qwen-Image's guidance moves (and not on a guidance-distilled transformer, whose scale is an input)."""
    arguments = {"guidance_scale": 4.0, "negative_prompt": None}
    plain = types.SimpleNamespace(config={"guidance_embeds": False})
    distilled = types.SimpleNamespace(config=types.SimpleNamespace(guidance_embeds=True))
    for name, family in FAMILIES.items():
        moved = guided_arguments(family, plain, arguments)
        assert moved == (
            {"true_cfg_scale": 4.0, "negative_prompt": ""} if name == "QwenImageTransformer2DModel" else arguments
        ), name
        assert guided_arguments(family, distilled, arguments) == arguments
