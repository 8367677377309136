from __future__ import annotations

import pytest

from crossattn.config import ModelConfig, SamplingConfig

from .conftest import tiny_config


def test_model_config_round_trip(tmp_path):
    cfg = tiny_config(text_max_length=12)
    cfg.save(tmp_path / "c.json")
    loaded = ModelConfig.load(tmp_path / "c.json")
    assert loaded == cfg
    assert isinstance(loaded.block_out_channels, tuple)


def test_sampling_config_round_trip():
    cfg = SamplingConfig(steps=7, guidance_scale=2.5, scheduler="ddim")
    assert SamplingConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cross_attention_levels": (True,)}, "cross_attention_levels"),
        ({"block_out_channels": (8, 12)}, "divisible"),
        ({"resolution": 15}, "resolution 15"),
        ({"prediction_type": "noise"}, "accepted"),
        ({"default_scheduler": "lms"}, "ddpm"),
    ],
)
def test_invalid_values_name_the_problem(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_unknown_keys_are_listed():
    with pytest.raises(ValueError, match="unknown ModelConfig keys \\['colour'\\]"):
        ModelConfig.from_dict({"colour": 1})
