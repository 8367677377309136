"""Named recipes: ``--recipe speedrun`` sets what it claims (flags still win), its snapshots come at
their minutes of the training clock, and a resumed speedrun equals an uninterrupted one."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from crossattn.config import ModelConfig, TrainingConfig
from crossattn.data.shapes import ShapesDataset
from crossattn.training.recipes import CLIP_RECIPES, UNET_RECIPES, get_recipe, shipped_clip_folder
from crossattn.training.runs import RunDir
from crossattn.training.train import train

from .test_train import StopAt, fresh_accelerate_state, stop_at  # noqa: F401  (fixture)

SPEEDRUN = UNET_RECIPES["speedrun"]


def speedrun_configs(**training) -> tuple[ModelConfig, TrainingConfig]:
    """The speedrun's model and training settings, shrunk to a few steps of batch 2 at 16×16."""
    model, config = SPEEDRUN.apply(ModelConfig(), TrainingConfig())
    model = dataclasses.replace(model, resolution=16)
    small = dict(steps=4, batch_size=2, warmup_steps=1, time_limit=0.0, snapshot_minutes=(), checkpoint_every=2)
    return model, dataclasses.replace(config, **(small | training))


def test_unknown_recipe_names_the_known_ones():
    with pytest.raises(ValueError, match="'fast'.*speedrun"):
        get_recipe("fast")
    assert get_recipe("speedrun", clip=True) is CLIP_RECIPES["speedrun"]


def test_speedrun_flag_sets_the_recipe_and_flags_win(tmp_path):
    from crossattn.cli import main

    run = tmp_path / "run"
    argv = ["train", "--recipe", "speedrun", "--out", str(run), "--steps", "2", "--batch-size", "2"]
    assert main([*argv, "--lr", "5e-4", "--snapshot-minutes", "0.5", "2", "--no-progress", "--threads", "1"]) == 0
    saved = json.loads((run / "config.json").read_text())
    model, training = saved["model"], saved["training"]
    assert training["recipe"] == "speedrun"
    for key, value in SPEEDRUN.model.items():
        assert model[key] == (list(value) if isinstance(value, tuple) else value), key
    unet = json.loads((run / "final/unet/config.json").read_text())
    assert unet["mid_block_type"] == "UNetMidBlock2D" and unet["down_block_types"][-1] == "DownBlock2D"
    for key, value in SPEEDRUN.training.items():
        if key not in ("steps", "batch_size", "learning_rate", "snapshot_minutes"):
            assert training[key] == (list(value) if isinstance(value, tuple) else value), key
    assert (training["steps"], training["batch_size"], training["learning_rate"]) == (2, 2, 5e-4)  # flags win
    assert training["snapshot_minutes"] == [0.5, 2.0]
    # A U-Net from random weights reading the shipped mini-CLIP's text tower, frozen.
    assert training["init_from"] is None and not training["train_text_encoder"]
    assert training["text_encoder_from"] == shipped_clip_folder()
    shipped = load_file(f"{shipped_clip_folder()}/model.safetensors")
    text = load_file(run / "final/text_encoder/model.safetensors")
    assert text.keys() and all(torch.equal(text[k].float(), shipped[k].float()) for k in text)


def test_snapshots_come_at_their_minutes_and_keep_the_clock(tmp_path):
    model, cfg = speedrun_configs(steps=3, snapshot_minutes=(1e-9, 1e3))  # the first due after step 1
    data = ShapesDataset(64, resolution=16, seed=0, with_masks=True)
    train(model, cfg, data, tmp_path / "run", progress=False)
    run = RunDir(tmp_path / "run")
    assert sorted(p.name for p in run.snapshots.iterdir()) == [run.snapshot(1e-9).name]
    assert (run.snapshot(1e-9) / "unet/diffusion_pytorch_model.safetensors").is_file()
    records = [json.loads(x) for x in run.log.read_text().splitlines()]
    shots = [r for r in records if "snapshot" in r]
    assert [(r["step"], r["snapshot"]) for r in shots] == [(1, 1e-9)]
    state = json.loads((run.checkpoint(2) / "trainer_state.json").read_text())["train_state"]
    assert 0 < state["seconds"] < 600


def test_resumed_speedrun_equals_uninterrupted(tmp_path):
    model, cfg = speedrun_configs()
    data = lambda n: ShapesDataset(n, resolution=16, seed=0, with_masks=True)  # noqa: E731
    whole = train(model, cfg, data, tmp_path / "whole", progress=False)
    with pytest.raises(StopAt):
        train(model, cfg, data, tmp_path / "cut", on_step_end=stop_at(3), progress=False)
    resumed = train(model, cfg, data, tmp_path / "cut", resume="latest", progress=False)
    assert resumed.step == whole.step == 4
    assert resumed.losses == whole.losses[2:]
    a = load_file(tmp_path / "whole/final/unet/diffusion_pytorch_model.safetensors")  # EMA weights
    b = load_file(tmp_path / "cut/final/unet/diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_model_config_file_wins_over_the_recipe(tmp_path):
    from crossattn.cli import build_parser
    from crossattn.commands.train import build_configs

    shape = ModelConfig(block_out_channels=(32, 64, 64, 64), cross_attention_levels=(False, True, True, True))
    shape.save(tmp_path / "model.json")
    args = build_parser().parse_args(
        ["train", "--recipe", "speedrun", "--model-config", str(tmp_path / "model.json"), "--out", str(tmp_path / "r")]
    )
    model, training = build_configs(args)
    assert model == shape and training.recipe == "speedrun" and training.learning_rate == 1e-3


def test_the_snapshot_at_the_time_limit_is_written_before_the_run_stops(tmp_path):
    model, cfg = speedrun_configs(steps=5, time_limit=1e-9, snapshot_minutes=(1e-9,))  # both due after step 1
    train(model, cfg, ShapesDataset(64, resolution=16, seed=0, with_masks=True), tmp_path / "run", progress=False)
    run = RunDir(tmp_path / "run")
    assert (run.snapshot(1e-9) / "unet/diffusion_pytorch_model.safetensors").is_file()
    a = load_file(run.snapshot(1e-9) / "unet/diffusion_pytorch_model.safetensors")
    b = load_file(run.final / "unet/diffusion_pytorch_model.safetensors")  # the same EMA weights, the same step
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("command", ["train", "train-clip"])
def test_snapshot_minutes_out_of_order_are_refused_by_name(tmp_path, capsys, command):
    from crossattn.cli import main

    argv = [command, "--recipe", "speedrun", "--out", str(tmp_path / "run"), "--snapshot-minutes", "2", "1"]
    assert main([*argv, "--steps", "1", "--no-progress"]) != 0
    assert "snapshot_minutes must be increasing minutes > 0, got (2.0, 1.0)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing written
