"""Pieces of the training loop that need no training: targets, weights, probes, run folder."""

from __future__ import annotations

import json
import re

import pytest
import torch

from crossattn.config import SamplingConfig, TrainingConfig
from crossattn.errors import BadArgument
from crossattn.models.model import make_scheduler
from crossattn.training.losses import min_snr_weights
from crossattn.training.probes import ink_centre, predicted_clean
from crossattn.training.runs import RunDir


@pytest.mark.parametrize("kind", ["v_prediction", "epsilon", "sample"])
def test_predicted_clean_inverts_the_training_target(kind):
    sched = make_scheduler("ddpm", prediction_type=kind)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(4, 3, 8, 8, generator=g) * 2 - 1, torch.randn(4, 3, 8, 8, generator=g)
    t = torch.tensor([0, 300, 700, 950])
    x_t = sched.add_noise(x0, noise, t)
    target = {"v_prediction": sched.get_velocity(x0, noise, t), "epsilon": noise, "sample": x0}[kind]
    assert torch.allclose(predicted_clean(sched, x_t, t, target), x0, atol=1e-3)


def test_min_snr_weights_for_v_prediction():
    sched = make_scheduler("ddpm", prediction_type="v_prediction")
    t = torch.tensor([0, 500, 999])
    w = min_snr_weights(sched, t, gamma=5.0)
    assert torch.isfinite(w).all() and (w >= 0).all() and (w <= 1).all()
    assert w[-1] < 1e-3  # zero terminal SNR: the last step carries (almost) no weight


def test_ink_centre_finds_a_dark_pixel():
    image = torch.ones(1, 3, 16, 16)  # white
    image[0, :, 5, 3] = -1.0  # one black pixel at x=3, y=5
    assert ink_centre(image).tolist() == [[3.5, 5.5]]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("batch_size", 0, "batch_size must be at least 1"),
        ("steps", 0, "steps must be at least 1"),
        ("learning_rate", 0.0, "learning_rate must be > 0"),
        ("ema_decay", 1.0, "ema_decay must be in [0, 1)"),
        ("snr_gamma", -1.0, "snr_gamma must be > 0"),
        ("lr_schedule", "step", "lr_schedule 'step'; accepted: cosine"),
    ],
)
def test_training_config_rejects_impossible_values(field, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainingConfig(**{field: value})


def test_training_config_json_round_trip(tmp_path):
    cfg = TrainingConfig(steps=7, snr_gamma=5.0, sample_prompts=("a red circle",))
    cfg.save(tmp_path / "t.json")
    assert TrainingConfig.load(tmp_path / "t.json") == cfg
    cfg = TrainingConfig(sample_settings=SamplingConfig(steps=3, guidance_scale=2.5, scheduler="ddim"))
    cfg.save(tmp_path / "t.json")
    assert TrainingConfig.load(tmp_path / "t.json") == cfg


def test_a_config_saved_before_sample_settings_loads_into_them(tmp_path):
    """Run folders and model folders written before the sample grids' settings were a SamplingConfig hold
    ``sample_steps`` / ``sample_guidance``: they load into ``sample_settings``, and save in the new shape."""
    from importlib.resources import files

    shipped = json.loads(files("crossattn.pretrained").joinpath("training_config.json").read_text())
    assert shipped["sample_steps"] == 20 and "sample_settings" not in shipped  # written by an older version
    assert TrainingConfig.from_dict(shipped).sample_settings == SamplingConfig(steps=20, guidance_scale=4.0)
    old = {**TrainingConfig().to_dict(), "sample_steps": 5, "sample_guidance": 1.5}
    del old["sample_settings"]
    (tmp_path / "config.json").write_text(json.dumps({"training": old}))
    loaded = TrainingConfig.from_dict(json.loads((tmp_path / "config.json").read_text())["training"])
    assert loaded.sample_settings == SamplingConfig(steps=5, guidance_scale=1.5)
    assert TrainingConfig.from_dict(loaded.to_dict()) == loaded  # saved again in the new shape, read back
    with pytest.raises(BadArgument, match="steps 0 is not accepted"):
        TrainingConfig.from_dict({"sample_steps": 0})
    with pytest.raises(ValueError, match="unknown TrainingConfig keys"):
        TrainingConfig.from_dict({"stepz": 3})


def test_checkpoint_listing_ignores_temp_and_stray_folders(tmp_path):
    run = RunDir(tmp_path)
    for name in ("step-000002", "step-000010", ".step-000012.tmp", "notes", "step-12"):
        (run.checkpoints / name).mkdir(parents=True)
    assert [s for s, _ in run.list_checkpoints()] == [2, 10]
    assert run.resolve_resume("latest").name == "step-000010"
    run.remove_stale_temps()
    assert not (run.checkpoints / ".step-000012.tmp").exists()
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        run.resolve_resume(str(tmp_path / "nowhere"))


def test_timestep_bias_tilts_towards_high_noise():
    from crossattn.training.losses import sample_timesteps

    uniform = sample_timesteps(20000, 1000, 0.0, torch.Generator().manual_seed(0)).float()
    tilted = sample_timesteps(20000, 1000, 1.0, torch.Generator().manual_seed(0)).float()
    assert uniform.min() >= 0 and tilted.max() <= 999
    assert abs(uniform.mean().item() - 499.5) < 10  # uniform: mean T/2
    assert abs(tilted.mean().item() - 666.7) < 10  # density ∝ t: mean 2T/3
