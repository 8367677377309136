"""Per-image tuning before an edit of a given image (``tune_steps``, :mod:`crossattn.editing.image_tuning`):
the knob is checked, the adapter acts, is gone after the edit and after an exception, and a fit is the same
for its seed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from crossattn.cli import main
from crossattn.editing import image_tuning
from crossattn.editing.image_edit import edit_image, invert_image
from crossattn.editing.image_tuning import ADAPTER, TuningConfig, adapter_added, tune
from crossattn.editing.settings import GIVEN_IMAGE_KNOBS, MAX_TUNE_STEPS, EditSettings
from crossattn.sampling.given_image import given_picture, image_latents

SOURCE, TARGET = "a red square", "a blue square"
EDIT = dict(num_inference_steps=3, plain=False)


def unet_state(pipe) -> dict:
    """What must be the same before and after a tuned edit: the U-Net's modules, weights and flags."""
    unet = pipe.unet
    return {
        "modules": [(name, type(m).__name__) for name, m in unet.named_modules()],
        "weights": {name: p.detach().clone() for name, p in unet.named_parameters()},
        "grad": {name: p.requires_grad for name, p in unet.named_parameters()},
        "peft": (getattr(unet, "peft_config", None), vars(unet).get("_hf_peft_config_loaded", "unset")),
        "text_grad": [p.requires_grad for p in pipe.text_encoder.parameters()],
    }


def assert_same(before: dict, after: dict) -> None:
    assert after["modules"] == before["modules"] and after["peft"] == before["peft"]
    assert after["grad"] == before["grad"] and after["text_grad"] == before["text_grad"]
    assert before["weights"].keys() == after["weights"].keys()
    assert all(torch.equal(before["weights"][k], after["weights"][k]) for k in before["weights"])


@pytest.mark.parametrize("bad", [-1, 2.5, True, "10", MAX_TUNE_STEPS + 1])
def test_the_knob_is_checked(bad):
    with pytest.raises(ValueError, match=f"tune_steps is {bad!r}; accepted: a whole number"):
        EditSettings(tune_steps=bad)
    assert EditSettings(tune_steps=30).tune_steps == 30 and EditSettings().tune_steps == 0
    assert "tune_steps" in GIVEN_IMAGE_KNOBS  # a generated edit's sidecar leaves it out


def test_a_generated_edit_and_a_mismatched_inversion_refuse_it(tiny_pipe, picture):
    with pytest.raises(ValueError, match="tune_steps is 5: it fits the model to a given image"):
        EditSettings(tune_steps=5).generated()
    with pytest.raises(ValueError, match="tune_steps is -2"):
        invert_image(tiny_pipe, picture, SOURCE, tune_steps=-2)
    given = invert_image(tiny_pipe, picture, SOURCE, num_inference_steps=3)
    with pytest.raises(ValueError, match="0-step per-image fit, the settings ask for tune_steps 2"):
        edit_image(tiny_pipe, given, SOURCE, TARGET, tune_steps=2, **EDIT)
    for bad in (dict(rank=0), dict(lr=0), dict(batch_size=1.5), dict(caption_dropout=2), dict(seed="0")):
        with pytest.raises(ValueError, match=f"{next(iter(bad))} is"):
            TuningConfig(**bad)


def test_the_adapter_acts_and_is_gone_after_the_edit(tiny_pipe, picture):
    before = unet_state(tiny_pipe)
    plain = edit_image(tiny_pipe, picture, SOURCE, TARGET, **EDIT)
    tuned = edit_image(tiny_pipe, picture, SOURCE, TARGET, tune_steps=4, tuning=TuningConfig(lr=5e-2), **EDIT)
    assert_same(before, unet_state(tiny_pipe))
    rng = torch.get_rng_state()
    with adapter_added(tiny_pipe, TuningConfig()):
        assert ADAPTER in tiny_pipe.unet.peft_config
    assert torch.equal(rng, torch.get_rng_state()) and not hasattr(tiny_pipe.unet, "peft_config")  # A: a forked RNG
    fit = tuned.given.tuned
    assert fit.steps == 4 and len(fit.losses) == 4 and all(np.isfinite(fit.losses))
    assert all("lora_" in k for k in fit.weights) and any(v.abs().sum() > 0 for v in fit.weights.values())
    assert tuned.result.settings.tune_steps == 4
    assert not np.array_equal(np.asarray(plain.result.edited), np.asarray(tuned.result.edited))  # it acted
    assert not torch.equal(plain.given.inversion.latents, tuned.given.inversion.latents)  # inverted with it


def test_a_tuned_edit_is_deterministic_for_a_seed(tiny_pipe, picture):
    runs = [
        edit_image(tiny_pipe, picture, SOURCE, TARGET, tune_steps=3, tuning=TuningConfig(seed=s), **EDIT)
        for s in (7, 7, 8)
    ]
    first, again, other = (np.asarray(run.result.edited) for run in runs)
    assert np.array_equal(first, again) and runs[0].given.tuned.losses == runs[1].given.tuned.losses
    weights = [run.given.tuned.weights for run in runs]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert any(not torch.equal(weights[0][k], weights[2][k]) for k in weights[0])  # another seed, another fit
    # an inversion made once edits alike on its kept weights (the adapter added again for the edit)
    given = invert_image(tiny_pipe, picture, SOURCE, num_inference_steps=3, tune_steps=3, tuning=TuningConfig(seed=7))
    kept = edit_image(tiny_pipe, given, SOURCE, TARGET, tune_steps=3, **EDIT)
    assert np.array_equal(first, np.asarray(kept.result.edited))


class Boom(RuntimeError):
    pass


def boom(*args, **kwargs):
    raise Boom("raised inside the tuned run")


@pytest.mark.parametrize("where", ["fit", "inversion", "edit"])
def test_the_adapter_is_gone_after_an_exception(tiny_pipe, picture, monkeypatch, where):
    before = unet_state(tiny_pipe)
    if where == "fit":
        monkeypatch.setattr("crossattn.training.losses.diffusion_loss", boom)
    elif where == "inversion":
        monkeypatch.setattr("crossattn.editing.image_edit.invert", boom)
    else:
        monkeypatch.setattr("crossattn.editing.prompt_edit.edit", boom)
    with pytest.raises(Boom):
        edit_image(tiny_pipe, picture, SOURCE, TARGET, tune_steps=2, **EDIT)
    assert_same(before, unet_state(tiny_pipe))


def test_a_loaded_lora_stays_loaded_and_active(picture):
    from crossattn.models.loading import placeholder_pipeline
    from crossattn.training.lora import add_lora

    from .conftest import tiny_config

    pipe = placeholder_pipeline(tiny_config())
    pipe.set_progress_bar_config(disable=True)
    add_lora(pipe, rank=2)  # a LoRA of the user's ("default"), active
    before = unet_state(pipe)
    edit_image(pipe, picture, SOURCE, TARGET, tune_steps=2, **EDIT)
    assert_same(before, unet_state(pipe))
    assert list(pipe.unet.peft_config) == ["default"] and pipe.unet.active_adapters() == ["default"]
    latents = image_latents(pipe, given_picture(pipe, picture)[0])
    fit = tune(pipe, latents, SOURCE, 1)
    with adapter_added(pipe, fit.config, fit.weights):
        assert sorted(pipe.unet.active_adapters()) == sorted(["default", ADAPTER])  # both act during the edit
    assert pipe.unet.active_adapters() == ["default"]


def test_a_pipeline_the_fit_cannot_read_is_refused():
    class SDXLLike:
        unet, text_encoder_2 = object(), object()

    from crossattn.errors import BadArgument

    with pytest.raises(BadArgument, match="SDXLLike is not one"):
        image_tuning.check_tunable(SDXLLike())


def test_the_edit_command_passes_the_knob(tiny_model_dir, tmp_path, picture, capsys):
    args = ["edit", SOURCE, "--to", TARGET, "--model", str(tiny_model_dir), "--steps", "3", "--quiet"]
    assert main([*args, "--tune-steps", "2", "--out", str(tmp_path / "n")]) == 2
    assert "--tune-steps 2 fits the model to a given image (--image FILE)" in capsys.readouterr().err
    assert main([*args, "--image", str(picture), "--tune-steps", "2", "--out", str(tmp_path / "o")]) == 0
    meta = json.loads((tmp_path / "o" / "a-blue-square-0.json").read_text())
    assert meta["edit"]["tune_steps"] == 2
