"""The families added in 2026 (Qwen-Image, Flux.2, SD3.5, PixArt-Σ) on every surface, on tiny random pipelines: the one
dispatch capture point gives the untraced image bit for bit, true CFG keeps the negative call apart, LLM tokens are
merged into the prompt's words, and a surface that cannot work says why in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from crossattn.attention.dispatch_capture import DispatchCapture
from crossattn.attention.families import family_of
from crossattn.attention.maps import AttentionMaps
from crossattn.attention.trace import trace
from crossattn.attention.words import merge_words
from crossattn.cli import main

from .family_pipelines import PROMPTS, build_family, sample

NEW = ("qwenimage", "flux2", "flux2-dev", "sd35", "pixart-sigma", "sana")
SIZE = ["--height", "64", "--width", "96"]


@pytest.fixture(scope="module")
def pipes():
    """Each new family's tiny pipeline, built once for the module."""
    built = {}

    def get(name):
        if name not in built:
            built[name] = build_family(name)
        return built[name]

    return get


def sample_prompt(pipe, **kwargs):
    """The longer prompt, 2 steps at 64×96 (seeded)."""
    return np.asarray(sample(pipe, [PROMPTS[1]], **kwargs)[0])


@pytest.mark.parametrize("name", NEW)
def test_trace_draws_the_untraced_image_and_records_probabilities(pipes, name):
    pipe = pipes(name)
    plain = sample_prompt(pipe)
    with trace(pipe, kind="both") as tracer:
        traced = sample_prompt(pipe)
    assert np.array_equal(plain, traced)
    maps = tracer.maps()
    assert maps.words == PROMPTS[1].split() and maps.image_size == (64, 96)
    for layer, tensor in maps.tensors.items():  # (1, R, 1, N, K) probabilities of one softmax
        assert torch.isfinite(tensor).all() and (tensor >= 0).all(), layer
        assert (tensor.sum(-1) <= 1 + 1e-4).all(), layer


def test_dispatch_families_use_the_one_capture_point(pipes):
    for name in ("qwenimage", "flux2", "flux2-dev"):
        pipe = pipes(name)
        with trace(pipe, kind="both"):
            kinds = {type(p) for p in pipe.transformer.attn_processors.values()}
        assert kinds == {DispatchCapture}, name
        assert family_of(pipe.transformer).text_first


def test_sd35_image_only_attn2_is_recorded_as_self_attention(pipes):
    pipe = pipes("sd35")
    with trace(pipe, kind="self", layers="attn2") as tracer:
        sample_prompt(pipe)
    maps = tracer.maps()
    assert list(maps.meta["layers"]) == ["transformer_blocks.0.attn2.image"]
    layer = maps.meta["layers"]["transformer_blocks.0.attn2.image"]
    assert layer["kind"] == "self" and (layer["height"], layer["width"]) == (16, 24)
    rows = maps.tensors["transformer_blocks.0.attn2.image"].sum(-1)  # image-only softmax: every row sums to 1
    assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)


@pytest.mark.parametrize("name", ["qwenimage", "flux2"])
def test_true_cfg_keeps_the_negative_call_apart(pipes, name):
    """Qwen-Image (``true_cfg_scale``) and Flux.2 Klein (``guidance_scale``) call the transformer twice a step: the
    prompt's maps are the first call's, the negative prompt's the second's, and ``both`` holds the two apart."""
    pipe = pipes(name)
    extra = (
        dict(true_cfg_scale=4.0, negative_prompt="a yellow star") if name == "qwenimage" else dict(guidance_scale=4.0)
    )
    halves = {}
    for half in ("cond", "uncond", "both"):
        with trace(pipe, kind="cross", guidance_half=half) as tracer:
            sample(pipe, [PROMPTS[0]], **extra)
        maps = tracer.maps()
        assert maps.meta["guided"] and [i["half"] for i in maps.meta["images"]] == (
            ["uncond", "cond"] if half == "both" else [half]
        )
        halves[half] = {n: maps.tensors[n] for n in maps.meta["layers"]}
    for layer, both in halves["both"].items():
        cond, uncond = halves["cond"][layer], halves["uncond"][layer]
        torch.testing.assert_close(both[:, 1:], cond)
        torch.testing.assert_close(both[:, :1][..., : uncond.shape[-1]], uncond)
        assert not torch.equal(cond[..., : min(cond.shape[-1], uncond.shape[-1])], uncond[..., : cond.shape[-1]])


def test_qwen_text_mask_gives_masked_keys_no_attention(pipes):
    """Two prompts of different lengths: the shorter one's padded text keys are masked, so they get 0."""
    pipe = pipes("qwenimage")
    plain = sample(pipe, PROMPTS)
    with trace(pipe, kind="both") as tracer:
        traced = sample(pipe, PROMPTS)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(plain, traced, strict=True))
    maps = tracer.maps()
    short = maps.meta["images"][0]
    pads = [i for i, token in enumerate(short["tokens"]) if token == "<pad>"]
    assert pads
    for layer in maps.cross_layers:
        assert maps.tensors[layer][:, 0, ..., pads].abs().max() == 0
    for layer in maps.cross_layers:  # one softmax over the attended keys: text block + image block = 1 per row
        image = maps.tensors[f"{layer.removesuffix('.text')}.image"]
        total = maps.tensors[layer].sum(-1) + image.sum(-1)
        torch.testing.assert_close(total, torch.ones_like(total), atol=1e-5, rtol=0)


def test_llm_byte_level_tokens_merge_into_words():
    tokens = ["<|im_start|>", "user", "Ċ", "a", "Ġgreen", "Ġtri", "angle", ",", "Ġred", "<|im_end|>"]
    encoders = ["none"] * 3 + ["qwen"] * 6 + ["none"]
    assert merge_words(tokens, encoders) == [("a", [3]), ("green", [4]), ("triangle", [5, 6]), ("red", [8])]


@pytest.mark.parametrize("name", NEW)
def test_maps_writes_every_view_on_a_new_family(family_dir, name, tmp_path):
    """Every view; Sana's self-attention is linear (no softmax map), so it has no self-attention view."""
    args = ["maps", "a red circle", "--model", str(family_dir(name)), "--steps", "2", "--out", str(tmp_path), *SIZE]
    pixel = [] if name == "sana" else ["--self-attn-pixel", "90", "60"]
    assert main([*args, "--per-step", "--gif", "--html", *pixel, "--quiet"]) == 0
    stem = tmp_path / "a-red-circle-0"
    for suffix in (".png", ".maps.png", ".grid.png", ".maps.html") + ((".self-90-60.png",) if pixel else ()):
        assert stem.with_suffix(suffix).is_file(), suffix
    assert Image.open(stem.with_suffix(".circle.gif")).n_frames == 2
    assert '"circle"' in stem.with_suffix(".maps.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", NEW)
def test_edit_on_a_new_family_is_one_clear_line(family_dir, name, tmp_path, capsys):
    family_dir(name)
    capsys.readouterr()  # the folder's saving
    code = main(
        ["edit", "a red circle", "--to", "a blue circle", "--model", str(family_dir(name)), "--out", str(tmp_path)]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "attention control (edit) needs a U-Net" in err[0]
    assert not any(tmp_path.iterdir())


def test_self_attention_of_sana_is_one_line(family_dir, tmp_path, capsys):
    family_dir("sana")
    capsys.readouterr()  # the folder's saving
    args = ["maps", "a red circle", "--model", str(family_dir("sana")), "--self-attn-pixel", "10", "10"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Sana's self-attention (attn1) is linear attention: it has no softmax map" in err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["qwenimage", "sd35"])
def test_maps_of_a_given_image(family_dir, name, picture, tmp_path):
    """``maps --image``: the family's img2img pipeline denoises the picture under the trace (Qwen-Image's encodes the
    picture with its own VAE)."""
    args = ["maps", "a red circle", "--image", str(picture), "--model", str(family_dir(name)), "--steps", "4"]
    assert main([*args, "--out", str(tmp_path), "--quiet"]) == 0
    stem = tmp_path / "a-red-circle-scene-0"
    maps = AttentionMaps.load(stem.with_suffix(".maps.safetensors"))
    assert maps.image_size == Image.open(stem.with_suffix(".png")).size[::-1] and maps.words == ["a", "red", "circle"]


@pytest.mark.parametrize("name", ["flux2", "flux2-dev", "pixart-sigma", "sana"])
def test_maps_of_a_given_image_without_a_noising_path_is_one_line(family_dir, name, picture, tmp_path, capsys):
    args = ["maps", "a red circle", "--image", str(picture), "--model", str(family_dir(name)), "--steps", "2"]
    capsys.readouterr()  # the folder's saving
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "maps --image cannot read a given image with" in err[0], err
    assert not (tmp_path / "out").exists()


def test_flux_through_the_dispatch_capture_point_gives_the_same_bits(monkeypatch):
    """Flux keeps its own capture class (joint.py), but the one dispatch capture point records the very same maps
    and image: the mechanism covers it (``joint_capture_class`` stood down for Flux's processor here)."""
    import crossattn.attention.trace as tracing

    pipe = build_family("flux")
    own = tracing.joint_capture_class

    def sd3_only(processor):
        return None if "Flux" in type(processor).__name__ else own(processor)

    results = []
    for dispatch in (False, True):
        if dispatch:
            monkeypatch.setattr(tracing, "joint_capture_class", sd3_only)
        with trace(pipe, kind="both") as tracer:
            image = sample_prompt(pipe)
            kinds = {type(p).__name__ for p in pipe.transformer.attn_processors.values()}
        results.append((image, tracer.maps(), kinds))
    (image, maps, kinds), (image_d, maps_d, kinds_d) = results
    assert kinds == {"FluxCaptureProcessor"} and kinds_d == {"DispatchCapture"}
    assert np.array_equal(image, image_d)
    for layer, tensor in maps.tensors.items():
        assert torch.equal(tensor, maps_d.tensors[layer]), layer


def test_true_cfg_both_halves_with_a_longer_negative_prompt(pipes):
    """Qwen-Image trims each prompt's text keys to its own length: the two calls' blocks are joined padded with 0."""
    pipe = pipes("qwenimage")
    extra = dict(true_cfg_scale=4.0, negative_prompt="a yellow star above a blue square left of a green triangle")
    maps = {}
    for half in ("cond", "both"):
        with trace(pipe, kind="cross", guidance_half=half) as tracer:
            sample(pipe, [PROMPTS[0]], **extra)
        maps[half] = tracer.maps()
    for layer, cond in maps["cond"].tensors.items():
        both = maps["both"].tensors[layer]  # (1, 2, 1, N, K_negative)
        assert both.shape[-1] > cond.shape[-1]
        torch.testing.assert_close(both[:, 1:, ..., : cond.shape[-1]], cond)
        assert both[:, 1:, ..., cond.shape[-1] :].abs().max() == 0
    assert maps["both"].words_for(1) == PROMPTS[0].split()


def test_a_given_image_with_a_negative_prompt_keeps_true_cfg_apart(pipes, picture):
    """Qwen-Image's img2img pipeline (made by ``from_pipe``, its calls unseen by the tracer) runs the negative prompt
    as a second call a step: ``both`` gives it its own row instead of averaging it into the prompt's."""
    from crossattn.sampling.given_image import maps_of_image

    pipe = pipes("qwenimage")
    got = maps_of_image(pipe, picture, "a red circle", negative_prompt="a blue square", num_inference_steps=2,
                        guidance_half="both")  # fmt: skip
    assert got.maps.meta["guided"] and [i["half"] for i in got.maps.meta["images"]] == ["uncond", "cond"]
    assert got.maps.words_for(1) == ["a", "red", "circle"]
