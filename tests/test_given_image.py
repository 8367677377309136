"""Word maps of an image the model did not draw: ``crossattn.maps_of_image`` and ``crossattn maps --image``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from crossattn.attention.maps import AttentionMaps
from crossattn.cli import main
from crossattn.sampling import SamplingRequest
from crossattn.sampling.given_image import fit_image, maps_of_image, read_image

from .conftest import generator


@pytest.mark.parametrize("samples", [None, 3])
def test_maps_of_image_are_the_image_size_in_both_modes(tiny_pipe, picture, samples):
    result = maps_of_image(
        tiny_pipe, picture, "a red circle", samples=samples, num_inference_steps=4, generator=generator()
    )
    assert result.maps.word_map("circle").shape == (16, 16) and result.maps.image_size == (16, 16)
    assert result.mode == ("denoise" if samples is None else "draws")
    assert result.maps.meta["steps"] == (2 if samples is None else 3)  # strength 0.5 of 4 steps; or the draws
    assert np.array_equal(np.asarray(result.image), np.asarray(Image.open(picture)))
    assert result.denoised.size == (16, 16) and result.timestep > 0 and result.notes == ()


def test_a_prompt_that_does_not_describe_the_image_still_runs(tiny_pipe, picture):
    result = maps_of_image(tiny_pipe, picture, "a green star", samples=1, num_inference_steps=2)
    assert result.maps.word_map("star").shape == (16, 16)


@pytest.mark.parametrize(
    ("mode", "size", "note"),
    [
        ("RGBA", (16, 16), "is RGBA; converted to RGB (transparency on white)"),
        ("L", (16, 16), "is L; converted to RGB"),
        ("LAB", (16, 16), "is LAB; converted to RGB"),  # its A is a colour axis, not alpha
        ("PA", (16, 16), "is PA; converted to RGB (transparency on white)"),
        ("RGB", (40, 24), "is 40x24; resized to the model's 16x16"),
    ],
)
def test_other_modes_and_sizes_are_converted_with_a_note(mode, size, note):
    with pytest.warns(UserWarning, match=note.replace("(", r"\(").replace(")", r"\)")):
        image, notes = fit_image(Image.new(mode, size), (16, 16))
    assert image.mode == "RGB" and image.size == (16, 16) and note in notes[0]
    assert ("transparency" in notes[0]) == ("transparency" in note)


def test_transparency_is_composited_on_white():
    with pytest.warns(UserWarning, match="x is RGBA"):
        image, _ = fit_image(Image.new("RGBA", (16, 16), (0, 0, 0, 0)), (16, 16), "x")
    assert np.asarray(image).min() == 255


def test_unreadable_and_missing_files_are_named(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match=f"cannot read image {bad}"):
        read_image(bad)
    with pytest.raises(FileNotFoundError, match="missing.png does not exist"):
        read_image(tmp_path / "missing.png")


def test_the_request_checks_image_strength_and_samples(picture, tmp_path):
    request = SamplingRequest(("a red circle",), image=str(picture))
    assert request.strength == 0.5 and request.samples is None and request.relation_guidance == 0
    assert SamplingRequest(("x",), image=picture, strength=1, samples=4).samples == 4
    for strength in (0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=f"strength {strength!r} is not accepted"):
            SamplingRequest(("x",), image=picture, strength=strength)
    with pytest.raises(ValueError, match="samples 0 is not accepted; give a whole number from 1 to 1000"):
        SamplingRequest(("x",), image=picture, samples=0)
    with pytest.raises(ValueError, match=r"strength 0.3 needs an image to read \(--image FILE\)"):
        SamplingRequest(("x",), strength=0.3)
    with pytest.raises(FileNotFoundError, match="nope.png does not exist"):
        SamplingRequest(("x",), image=tmp_path / "nope.png")
    assert SamplingRequest(("x",)).relation_guidance > 0  # without an image nothing changes


def test_pipeline_runs_the_last_strength_share_of_the_steps(tiny_pipe):
    image = torch.zeros(1, 3, 16, 16)
    seen = []

    def count(pipe, i, t, kwargs):
        seen.append(int(t))
        return kwargs

    kwargs = dict(num_inference_steps=8, image=image, output_type="pt", callback_on_step_end=count)
    first = tiny_pipe("a red circle", strength=0.25, generator=generator(), **kwargs).images
    assert len(seen) == 2 and seen == sorted(seen, reverse=True)
    again = tiny_pipe("a red circle", strength=0.25, generator=generator(), **kwargs).images
    assert torch.equal(first, again)
    with pytest.raises(ValueError, match=r"strength 0 is not accepted; give a number in \(0, 1\]"):
        tiny_pipe("a red circle", strength=0, **kwargs)


def test_maps_command_with_image_draws_on_the_given_image(tiny_model_dir, tmp_path, capsys):
    source = tmp_path / "photo.png"
    Image.new("LA", (32, 20), (90, 255)).save(source)
    args = ["maps", "a red circle", "--model", str(tiny_model_dir), "--steps", "4", "--out", str(tmp_path / "o")]
    assert main([*args, "--image", str(source), "--strength", "0.5", "--html"]) == 0
    err = capsys.readouterr().err
    assert (
        f"crossattn: warning: image {source} is LA; converted to RGB" in err and "resized to the model's 16x16" in err
    )
    stem = tmp_path / "o" / "a-red-circle-photo-0"
    for suffix in (".png", ".json", ".maps.safetensors", ".maps.png", ".grid.png", ".maps.html", ".denoised.png"):
        assert stem.with_suffix(suffix).is_file(), suffix
    given, _ = fit_image(Image.open(source), (16, 16))
    assert np.array_equal(np.asarray(Image.open(stem.with_suffix(".png"))), np.asarray(given))
    meta = json.loads(stem.with_suffix(".json").read_text())["given_image"]
    assert meta["mode"] == "denoise" and meta["strength"] == 0.5 and meta["denoised"] == stem.name + ".denoised.png"
    assert "resized to the model's 16x16" in meta["notes"][1]
    assert AttentionMaps.load(stem.with_suffix(".maps.safetensors")).word_map("red").shape == (16, 16)


def test_maps_command_unreadable_image_is_one_line_exit_2(tiny_model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    assert main(["maps", "a red circle", "--model", str(tiny_model_dir), "--image", str(bad)]) == 2
    assert f"cannot read image {bad}" in capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize("samples", [[], ["--samples", "2"]])
def test_maps_command_with_image_on_a_stable_diffusion_folder(family_dir, tmp_path, picture, samples):
    folder = family_dir("sd15")  # attention_helpers.tiny_sd_pipeline saved as a diffusers folder, once a session
    out = tmp_path / "o"
    args = ["maps", "a red circle", "--model", str(folder), "--steps", "4", "--out", str(out), "--image", str(picture)]
    assert main([*args, *samples]) == 0
    maps = AttentionMaps.load(out / "a-red-circle-scene-0.maps.safetensors")
    assert maps.image_size == (16, 16) and maps.word_map("circle").shape == (16, 16)
    assert Image.open(out / "a-red-circle-scene-0.denoised.png").size == (16, 16)
    assert json.loads((out / "a-red-circle-scene-0.json").read_text())["given_image"]["mode"] == (
        "draws" if samples else "denoise"
    )


def test_sampling_from_noise_refuses_a_request_with_an_image(picture, tiny_model_dir, tmp_path):
    from crossattn.sampling import ModelRef, run

    request = SamplingRequest(("a red circle",), image=str(picture), out=str(tmp_path / "out"))
    with pytest.raises(ValueError, match="samples from noise.*maps_of_image"):
        run(request, ModelRef.resolve(tiny_model_dir), quiet=True)
    assert not (tmp_path / "out").exists()  # refused before anything was written
