"""Every surface of the command line on every model family (SD-1.5, SDXL, SD3 with and without T5, Flux): tiny random
pipelines saved to disk and loaded back through ``--model``, a non-square size and a batch of two prompts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

from crossattn.attention.maps import AttentionMaps
from crossattn.cli import main

from .family_pipelines import FAMILIES_2026, PROMPTS

FAMILIES = ("sd15", "sdxl", "sd3", "sd3-no-t5", "flux")
SIZE = ["--height", "64", "--width", "96"]  # non-square; every family takes it


@pytest.mark.parametrize("name", [*FAMILIES, *FAMILIES_2026])
def test_generate_maps_a_batch_of_two_prompts_at_a_non_square_size(family_dir, name, tmp_path):
    args = ["generate", *PROMPTS, "--model", str(family_dir(name)), "--steps", "2", "--maps", "--quiet"]
    assert main([*args, *SIZE, "--out", str(tmp_path)]) == 0
    for prompt in PROMPTS:
        stem = tmp_path / f"{prompt.replace(' ', '-')}-0-0"
        assert Image.open(stem.with_suffix(".png")).size == (96, 64)
        maps = AttentionMaps.load(stem.with_suffix(".maps.safetensors"))
        assert maps.image_size == (64, 96) and maps.words == prompt.split()
        for word in prompt.split():
            heat = maps.word_map(word)
            assert heat.shape == (64, 96) and torch.isfinite(heat).all() and (heat >= 0).all()
        assert heat.max() > 0  # the last word (the shape) is attended to
        meta = json.loads(stem.with_suffix(".maps.json").read_text())
        encoders = meta["images"][0].get("encoders")
        assert (encoders is None) == (name in ("sd15", "sdxl"))  # the other families name each token's encoder
        assert encoders is None or len(encoders) > 0
        assert json.loads(stem.with_suffix(".json").read_text())["height"] == 64


@pytest.mark.parametrize("name", FAMILIES)
def test_maps_writes_every_view(family_dir, name, tmp_path):
    args = ["maps", "a red circle", "--model", str(family_dir(name)), "--steps", "2", "--out", str(tmp_path), *SIZE]
    assert main([*args, "--per-step", "--gif", "--html", "--self-attn-pixel", "90", "60", "--quiet"]) == 0
    stem = tmp_path / "a-red-circle-0"
    for suffix in (".png", ".maps.png", ".grid.png", ".self-90-60.png", ".maps.html"):
        assert stem.with_suffix(suffix).is_file(), suffix
    assert Image.open(stem.with_suffix(".circle.gif")).n_frames == 2
    assert Image.open(stem.with_suffix(".grid.png")).size[0] > 0
    html = stem.with_suffix(".maps.html").read_text(encoding="utf-8")
    assert '"circle"' in html


@pytest.mark.parametrize("name", ["sd3", "flux"])
def test_edit_on_joint_attention_models_is_one_clear_line(family_dir, name, tmp_path, capsys):
    code = main(
        ["edit", "a red circle", "--to", "a blue circle", "--model", str(family_dir(name)), "--out", str(tmp_path)]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "attention control (edit) needs a U-Net" in err[0] and "edit works on SD-1.5, SDXL and crossattn" in err[0]
    assert not any(tmp_path.iterdir())


def test_edit_on_an_sdxl_folder_at_a_non_square_size(family_dir, tmp_path):
    args = ["edit", "a red circle", "--to", "a blue circle", "--model", str(family_dir("sdxl")), "--steps", "2"]
    assert main([*args, *SIZE, "--out", str(tmp_path), "--quiet"]) == 0
    assert Image.open(tmp_path / "a-blue-circle-0.edited.png").size == (96, 64)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--height", "30"],
            "height 30 is not accepted by StableDiffusion3Pipeline: give a multiple of 4 (its own size is 64x64)",
        ),
        (["--dtype", "float16"], "dtype float16 needs a GPU device"),
        (["--self-attn-pixel", "96", "0", "--width", "96"], "pixel (96, 0) is outside the 96x64 image"),
    ],
)
def test_bad_sizes_and_dtypes_are_one_line(family_dir, tmp_path, capsys, extra, message):
    code = main(
        ["maps", "a red circle", "--model", str(family_dir("sd3")), "--steps", "1", "--out", str(tmp_path), *extra]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and message in err[-1]
    assert not any(tmp_path.iterdir())


def test_loading_an_sd3_folder_prints_no_library_notices(family_dir, tmp_path):
    """A fresh process, as a user runs it: transformers' "requires torchvision" notice is not printed."""
    folder = family_dir("sd3-no-t5")
    command = [sys.executable, "-m", "crossattn.cli", "maps", "a red circle", "--model", str(folder), "--steps", "1"]
    done = subprocess.run([*command, "--out", str(tmp_path), "--quiet"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_a_folder_of_another_pipeline_class_is_one_line(tmp_path, capsys):
    folder = tmp_path / "kandinsky"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyPipeline"}))
    assert main(["maps", "a red circle", "--model", str(folder), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds a KandinskyPipeline; crossattn loads CrossAttnPipeline" in err[0]
    assert "StableDiffusion3Pipeline, FluxPipeline" in err[0]


def test_bfloat16_on_cpu(family_dir, tmp_path):
    args = ["generate", "a red circle", "--model", str(family_dir("flux")), "--steps", "2", "--dtype", "bfloat16"]
    assert main([*args, *SIZE, "--maps", "--out", str(tmp_path), "--quiet"]) == 0
    maps = AttentionMaps.load(tmp_path / "a-red-circle-0-0.maps.safetensors")
    assert maps.word_map("circle").shape == (64, 96) and torch.isfinite(maps.word_map("circle")).all()


@pytest.mark.parametrize("name", ["sdxl", "sd3", "flux"])
def test_maps_of_a_given_image_on_every_family(family_dir, name, picture, tmp_path):
    """``maps --image``: diffusers' img2img pipeline of the family (same modules) denoises the image under the trace."""
    args = ["maps", "a red circle", "--image", str(picture), "--model", str(family_dir(name)), "--steps", "4"]
    assert main([*args, "--out", str(tmp_path), "--quiet"]) == 0
    stem = tmp_path / "a-red-circle-scene-0"
    maps = AttentionMaps.load(stem.with_suffix(".maps.safetensors"))
    size = Image.open(stem.with_suffix(".png")).size
    assert maps.image_size == size[::-1] and maps.num_steps == 2 and maps.words == ["a", "red", "circle"]
    assert json.loads(stem.with_suffix(".json").read_text())["given_image"]["mode"] == "denoise"


def test_draws_mode_on_a_joint_model_is_one_line(family_dir, picture, tmp_path, capsys):
    args = ["maps", "a red circle", "--image", str(picture), "--model", str(family_dir("sd3")), "--samples", "2"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    assert "the draws mode reads U-Net pipelines" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
