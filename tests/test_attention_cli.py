"""``crossattn generate --maps`` and ``crossattn maps`` on tiny model folders (ours and a StableDiffusionPipeline)."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from crossattn.attention.maps import AttentionMaps
from crossattn.cli import main

from .attention_helpers import tiny_sd_pipeline


@pytest.fixture(scope="module")
def ours(tiny_model_dir):
    return tiny_model_dir


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sd")
    tiny_sd_pipeline().save_pretrained(folder, safe_serialization=True)
    return folder


def test_generate_with_maps_writes_maps_per_image(ours, tmp_path, capsys):
    args = [
        "generate",
        "a red circle",
        "--model",
        str(ours),
        "--steps",
        "2",
        "--num-images",
        "2",
        "--out",
        str(tmp_path),
    ]
    assert main([*args, "--maps"]) == 0
    for i in range(2):
        stem = tmp_path / f"a-red-circle-0-{i}"
        maps = AttentionMaps.load(stem.with_suffix(".maps.safetensors"))
        assert maps.num_images == 1 and maps.words == ["a", "red", "circle"]
        assert maps.meta["sampling"]["image_seed"] == i
        assert json.loads(stem.with_suffix(".maps.json").read_text())["guidance_half"] == "cond"
        assert Image.open(stem.with_suffix(".maps.png")).size[0] > 0
    assert main([*args, "--maps"]) == 2  # refuses to overwrite
    assert "will not overwrite" in capsys.readouterr().err


def test_maps_command_all_views(ours, tmp_path):
    args = ["maps", "a red circle", "--model", str(ours), "--steps", "2", "--out", str(tmp_path)]
    assert (
        main([*args, "--per-step", "--gif", "--words", "circle", "--self-attn-pixel", "3", "4", "--layers", "8"]) == 0
    )
    stem = tmp_path / "a-red-circle-0"
    for suffix in (".png", ".json", ".maps.safetensors", ".maps.json", ".maps.png", ".grid.png", ".self-3-4.png"):
        assert stem.with_suffix(suffix).is_file(), suffix
    assert Image.open(stem.with_suffix(".circle.gif")).n_frames == 2
    maps = AttentionMaps.load(stem.with_suffix(".maps.safetensors"))
    assert maps.meta["per_step"] and all(maps.meta["layers"][n]["resolution"] == 8 for n in maps.layer_names)
    assert len(maps.self_layers) == len(maps.cross_layers) == 4


def test_maps_command_on_a_stable_diffusion_folder(sd, tmp_path):
    assert main(["maps", "a blue square", "--model", str(sd), "--steps", "2", "--out", str(tmp_path)]) == 0
    maps = AttentionMaps.load(tmp_path / "a-blue-square-0.maps.safetensors")
    assert maps.image_size == (16, 16) and maps.word_map("square").shape == (16, 16)
    assert Image.open(tmp_path / "a-blue-square-0.png").size == (16, 16)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--words", "cat"], "word 'cat' is not in the prompt; words are: a, red, circle"),
        (["--layers", "nothing"], "match no cross-attention layer; layers are: down_blocks.1"),
        (["--gif"], "--gif needs --per-step"),
        (["--self-attn-pixel", "40", "0"], "outside the 16x16 image; X goes from 0 to 15, Y from 0 to 15"),
    ],
)
def test_maps_command_errors_are_one_line_exit_2(ours, tmp_path, capsys, extra, message):
    code = main(["maps", "a red circle", "--model", str(ours), "--steps", "1", "--out", str(tmp_path), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("crossattn: error: ") and message in err[-1]


def test_generate_maps_refuses_a_non_unet_pipeline(tmp_path, monkeypatch):
    from crossattn.commands import shared

    class NoUnet:
        unet = torch.nn.Linear(1, 1)

    with pytest.raises(ValueError, match="need a UNet2DConditionModel"):
        shared.check_unet(NoUnet())
