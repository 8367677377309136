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


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"guidance_scale": -1}, r"guidance -1 is not accepted; give a finite number >= 0 and <= 100"),
        ({"guidance_scale": 101}, "guidance 101 is not accepted"),
        ({"relation_guidance": 2e6}, "relation guidance 2000000.0 is not accepted"),
        ({"steps": 1001}, "steps 1001 is not accepted"),
        ({"scheduler": "plms"}, "unknown scheduler 'plms'"),
    ],
)
def test_sampling_settings_are_checked_once_for_every_front(overrides, message):
    """The web page, the CLI and training samples all build a SamplingConfig: a negative guidance is refused
    there (pipelines would sample it unguided, as 1), not sampled."""
    from crossattn.errors import BadArgument

    with pytest.raises(BadArgument, match=message):
        SamplingConfig(**overrides)
