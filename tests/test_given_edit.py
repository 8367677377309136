"""Edits of an image the model did not draw: inversion, ``crossattn.edit_image`` and ``crossattn edit --image``."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from crossattn.cli import main
from crossattn.editing.image_edit import edit_image, invert_image
from crossattn.editing.prompt_edit import edit
from crossattn.editing.settings import PINNED_AFTER_DDIM, PINNED_AFTER_NULL_TEXT, PINNED_DIRECT
from crossattn.errors import BadArgument
from crossattn.sampling import SamplingRequest
from crossattn.sampling.inversion import (
    FIXED_POINT_STEPS,
    NULL_TEXT_FIXED_POINT_STEPS,
    NULL_TEXT_LR,
    NULL_TEXT_REFIT_LR,
    NullText,
    ddim_scheduler,
    inverse_step,
    level_alphas,
    prompt_states,
    psnr,
)

from .attention_helpers import tiny_sd_pipeline


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_inverse_step_undoes_a_ddim_step(tiny_pipe, prediction_type):
    from diffusers import DDIMScheduler

    # an ε-predicting model cannot use a zero-terminal-SNR schedule (its last step divides by √ᾱ = 0)
    zero_snr = prediction_type == "v_prediction"
    config = ddim_scheduler(tiny_pipe).config
    scheduler = DDIMScheduler.from_config(config, prediction_type=prediction_type, rescale_betas_zero_snr=zero_snr)
    scheduler.set_timesteps(10)
    torch.manual_seed(0)
    x, pred = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.randn(2, 3, 8, 8, dtype=torch.float64)
    for t in scheduler.timesteps[[0, 5, -1]]:
        here = int(t) - scheduler.config.num_train_timesteps // 10
        start = inverse_step(x, pred, level_alphas(scheduler, here), level_alphas(scheduler, int(t)), prediction_type)
        assert torch.allclose(scheduler.step(pred, t, start).prev_sample, x, atol=1e-3)  # √ᾱ ≈ 0.01 at t = 999


def test_inversions_reconstruct_the_image_at_any_guidance(tiny_pipe, picture):
    """DDIM inversion's source row has the prompt's own states as its unconditional ones (negative-prompt
    inversion), null-text's are fitted: both draw the image again at guidance 5 far closer than the same
    DDIM path sampled with the empty prompt's (plain classifier-free guidance drifts off the path)."""
    plain = invert_image(tiny_pipe, picture, "a red square", num_inference_steps=6, guidance_scale=5.0)
    null = invert_image(
        tiny_pipe, picture, "a red square", num_inference_steps=6, guidance_scale=5.0, null_text_steps=3
    )
    assert plain.inversion.latents.shape == (1, 3, 16, 16) and len(plain.inversion.trajectory) == 7
    cond, _ = prompt_states(tiny_pipe, "a red square")
    assert all(torch.equal(plain.inversion.null_embeddings[t], cond) for t in plain.inversion.timesteps)
    assert sorted(null.inversion.null_embeddings) == sorted(null.inversion.timesteps)
    empty = replace(plain, inversion=replace(plain.inversion, null_embeddings={}))
    scores = {}
    for name, given in (("ddim", plain), ("null", null), ("empty", empty)):
        edited = edit_image(tiny_pipe, given, "a red square", "a blue square", pinned_steps=0)
        assert edited.result.edited.size == (16, 16) and edited.result.plain is not None
        assert edited.psnr == psnr(edited.reconstruction, given.image)
        scores[name] = edited.psnr
    assert min(scores["ddim"], scores["null"]) > scores["empty"] + 5
    assert not tiny_pipe.unet._forward_pre_hooks  # the null-text hook is gone
    assert type(tiny_pipe.scheduler).__name__ != "DDIMScheduler"  # the pipeline's own sampler is back


def test_a_re_solve_is_kept_only_where_it_lands_closer(tiny_pipe, picture):
    """Fixed-point re-solves of the DDIM inversion (Pan et al., 2023) are kept step by step only where
    the DDIM step back from the re-solved start lands closer to where the step began."""
    from crossattn.sampling.given_image import given_picture, image_latents
    from crossattn.sampling.inversion import ddim_invert

    latents = image_latents(tiny_pipe, given_picture(tiny_pipe, picture)[0])
    cond, _ = prompt_states(tiny_pipe, "a red square")
    scheduler = ddim_scheduler(tiny_pipe)
    scheduler.set_timesteps(6)
    misses = {}
    with torch.no_grad():
        for re_solves in (0, 1, 3):
            path = ddim_invert(tiny_pipe, latents, cond, 6, re_solves)  # [x_0, …, x_6]
            misses[re_solves] = [
                torch.nn.functional.mse_loss(
                    scheduler.step(tiny_pipe.unet(x, t, encoder_hidden_states=cond).sample, t, x).prev_sample, below
                ).item()
                for t, x, below in zip(scheduler.timesteps, path[:0:-1], path[-2::-1], strict=True)
            ]
    # the first inversion step starts from the image in every run: there the guard's order is exact
    assert misses[3][-1] <= misses[1][-1] <= misses[0][-1]
    assert sum(misses[1]) < 0.1 * sum(misses[0]) and sum(misses[3]) < sum(misses[1])  # 1.4e-3, 4.7e-5, 2.9e-6


def guided(pipe, x, t, cond, uncond, guidance_scale: float) -> torch.Tensor:
    """The classifier-free-guided prediction at ``x`` ``(1, C, h, w)``, as a pipeline batches it: the
    reference the fitted states are checked against, apart from the fitter's own passes."""
    pred = pipe.unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
    pred_uncond, pred_cond = pred.chunk(2)  # each (1, C, h, w)
    return pred_uncond + guidance_scale * (pred_cond - pred_uncond)


def test_null_text_keeps_each_steps_states_and_their_loss(tiny_pipe, picture):
    """Each step's fitted states are its own (Adam updates in place: they once all ended up the last
    step's), and the loss recorded for a step is that of the states kept: sampling with them retraces
    the fitter's path, so the last step lands on the image with the last loss."""
    given = invert_image(
        tiny_pipe, picture, "a red square", num_inference_steps=5, guidance_scale=5.0, null_text_steps=4
    )
    inversion = given.inversion
    states = [inversion.null_embeddings[t] for t in inversion.timesteps]
    assert len({s.data_ptr() for s in states}) == len(states)
    assert not all(torch.equal(states[0], s) for s in states[1:])  # fitted step by step, not one tensor
    cond, _ = prompt_states(tiny_pipe, "a red square")
    scheduler = ddim_scheduler(tiny_pipe)
    scheduler.set_timesteps(5)
    x = inversion.latents
    with torch.no_grad():
        for t, null in zip(scheduler.timesteps, states, strict=True):
            x = scheduler.step(guided(tiny_pipe, x, t, cond, null, 5.0), t, x).prev_sample  # (1, C, h, w)
    error = torch.nn.functional.mse_loss(x, inversion.trajectory[0]).item()
    assert error == pytest.approx(inversion.null_text_losses[-1], rel=1e-3, abs=1e-9)
    torch.testing.assert_close(x, inversion.sampling_path[-1])  # the path the states were fitted along


def test_a_null_text_fit_that_misses_is_fitted_again_and_the_closer_kept(tiny_pipe, picture, monkeypatch):
    """A fit whose last step misses by more than ``NULL_TEXT_REFIT`` tolerances is fitted again at
    ``NULL_TEXT_REFIT_LR`` and the fit that ends closer kept, with its rate; a fit that holds is left."""
    from crossattn.sampling import inversion as module

    def fit(**constants):
        for name, value in constants.items():
            monkeypatch.setattr(module, name, value)
        args = dict(num_inference_steps=4, guidance_scale=5.0, null_text_steps=2)
        return invert_image(tiny_pipe, picture, "a red square", **args).inversion

    held = fit(NULL_TEXT_REFIT=float("inf"))
    assert held.null_text_lr == module.NULL_TEXT_LR
    alone = fit(NULL_TEXT_LR=module.NULL_TEXT_REFIT_LR)  # the larger rate from the start: what a refit finds
    assert held.null_text_losses != alone.null_text_losses
    monkeypatch.setattr(module, "NULL_TEXT_LR", held.null_text_lr)
    refitted = fit(NULL_TEXT_REFIT=0.0)  # every fit misses
    closer = min(held, alone, key=lambda inversion: inversion.null_text_losses[-1])
    assert refitted.null_text_losses == closer.null_text_losses and refitted.null_text_lr == closer.null_text_lr
    assert torch.equal(refitted.null_text_path[-1], closer.null_text_path[-1])


def test_pinning_after_null_text_keeps_the_source_on_the_fitted_path(tiny_pipe, picture):
    """After null-text inversion the source row is pinned to the path its states were fitted along, not
    the DDIM path they were fitted to reach (there each step's states act where they were not fitted:
    on Pillow pair 11 of the given-image benchmark, 16.0 dB against 39.6 unpinned)."""
    given = invert_image(
        tiny_pipe, picture, "a red square", num_inference_steps=6, guidance_scale=5.0, null_text_steps=3
    )
    inversion = given.inversion
    assert len(inversion.sampling_path) == 6 and inversion.sampling_path[0] is inversion.null_text_path[0]
    runs = [edit_image(tiny_pipe, given, "a red square", "a blue square", pinned_steps=p, plain=False) for p in (0, 1)]
    assert runs[1].psnr == pytest.approx(runs[0].psnr, abs=0.05)  # pinned all the way = its own fitted path
    ddim = invert_image(tiny_pipe, picture, "a red square", num_inference_steps=6, guidance_scale=5.0)
    assert ddim.inversion.sampling_path[-1] is ddim.inversion.trajectory[0]  # DDIM: the inversion path


def test_pinning_left_unset_is_chosen_by_the_inversion(tiny_pipe, picture):
    """``pinned_steps=None`` (the default): every step with Direct Inversion, else ``PINNED_AFTER_DDIM``
    after DDIM inversion, every step after
    null-text; a value given is kept, as a keyword or in ``settings``."""
    from crossattn.editing.settings import EditSettings

    ddim = invert_image(tiny_pipe, picture, "a red square", num_inference_steps=4, guidance_scale=5.0)
    null = invert_image(
        tiny_pipe, picture, "a red square", num_inference_steps=4, guidance_scale=5.0, null_text_steps=1
    )
    run = lambda given, **kw: edit_image(tiny_pipe, given, "a red square", "a blue square", plain=False, **kw)  # noqa: E731
    assert run(ddim).result.settings.pinned_steps == PINNED_AFTER_DDIM
    assert run(ddim, direct_inversion=True).result.settings.pinned_steps == PINNED_DIRECT  # Direct Inversion
    assert run(null).result.settings.pinned_steps == PINNED_AFTER_NULL_TEXT
    assert run(null, pinned_steps=0.5).result.settings.pinned_steps == 0.5
    assert run(null, settings=EditSettings(pinned_steps=0.25)).result.settings.pinned_steps == 0.25
    assert run(ddim, settings=EditSettings()).result.settings.pinned_steps == PINNED_AFTER_DDIM
    with pytest.raises(ValueError, match="settings must be an EditSettings, got dict"):
        run(ddim, settings={"pinned_steps": 0.5})


def test_null_text_rows_put_the_fitted_states_in_the_first_rows_only(tiny_pipe):
    unet, seen = tiny_pipe.unet, []
    dim, side = unet.config.cross_attention_dim, unet.config.sample_size
    fitted, states = torch.full((1, 4, dim), 7.0), torch.zeros(6, 4, dim)  # states: [uncond × 3, cond × 3]
    for rows in (None, 1):
        with NullText(unet, {999: fitted}, rows=rows):  # the spy after it: it sees what the U-Net gets
            spy = unet.register_forward_pre_hook(
                lambda m, a, k: seen.append(k["encoder_hidden_states"]), with_kwargs=True
            )
            try:
                unet(torch.zeros(6, unet.config.in_channels, side, side), 999, encoder_hidden_states=states)
            finally:
                spy.remove()
    fitted_rows = [[bool((s[i] == 7).all()) for i in range(6)] for s in seen]
    assert fitted_rows == [[True] * 3 + [False] * 3, [True] + [False] * 5]


def test_null_text_hook_goes_away_after_an_exception(tiny_pipe):
    states = {999: torch.zeros(1, 16, 32)}
    with pytest.raises(RuntimeError, match="boom"), NullText(tiny_pipe.unet, states):
        assert len(tiny_pipe.unet._forward_pre_hooks) == 1
        raise RuntimeError("boom")
    assert not tiny_pipe.unet._forward_pre_hooks


def test_bad_input_is_named(tiny_pipe, picture):
    with pytest.raises(ValueError, match="null-text inversion needs guidance_scale > 1"):
        invert_image(tiny_pipe, picture, "a red square", guidance_scale=1.0, null_text_steps=2)
    with pytest.raises(ValueError, match="null_text_steps -1"):
        invert_image(tiny_pipe, picture, "a red square", null_text_steps=-1)
    with pytest.raises(BadArgument, match="null_text_steps 1000000; give a whole number from 0 to 1000"):
        invert_image(tiny_pipe, picture, "a red square", null_text_steps=10**6)  # refused before any U-Net pass
    with pytest.raises(
        BadArgument, match="null_text_steps 1000000 is not accepted; give a whole number from 1 to 1000"
    ):
        SamplingRequest(("a", "b"), image=picture, null_text_steps=10**6)
    given = invert_image(tiny_pipe, picture, "a red square", num_inference_steps=2)
    with pytest.raises(ValueError, match="made with 'a red square'"):
        edit_image(tiny_pipe, given, "a red circle", "a blue circle")
    with pytest.raises(ValueError, match="drop generator"):
        edit_image(tiny_pipe, given, "a red square", "a blue square", generator=torch.Generator())
    with pytest.raises(ValueError, match="null_text_steps 3 needs an image"):
        SamplingRequest(("a", "b"), null_text_steps=3)


def test_edit_command_with_image(tiny_model_dir, tmp_path, picture, capsys):
    out = tmp_path / "o"
    args = ["edit", "a red square", "--to", "a blue square", "--model", str(tiny_model_dir), "--steps", "4"]
    assert main([*args, "--image", str(picture), "--null-text", "2", "--out", str(out), "--quiet"]) == 0
    assert "reconstruction PSNR" in capsys.readouterr().out
    stem = out / "a-blue-square-0"
    for view in ("source", "plain", "edited", "reconstruction", "compare"):
        assert (out / f"{stem.name}.{view}.png").is_file(), view
    assert np.array_equal(np.asarray(Image.open(out / f"{stem.name}.source.png")), np.asarray(Image.open(picture)))
    meta = json.loads(stem.with_suffix(".json").read_text())
    given = meta["given_image"]
    assert given["inversion"] == "null-text" and given["null_text_steps"] == 2 and len(given["null_text_losses"]) == 4
    assert meta["edit"]["pinned_steps"] == PINNED_AFTER_NULL_TEXT == 1  # chosen by the inversion, recorded
    assert given["fixed_point_steps"] == NULL_TEXT_FIXED_POINT_STEPS  # null-text fits the plain path
    assert given["null_text_lr"] in (NULL_TEXT_LR, NULL_TEXT_REFIT_LR)  # the fit kept, refitted or not
    reconstruction = Image.open(out / f"{stem.name}.reconstruction.png")
    assert given["reconstruction_psnr"] == pytest.approx(psnr(reconstruction, Image.open(picture)), abs=1e-3)
    assert meta["files"]["reconstruction"] == f"{stem.name}.reconstruction.png"


def test_edit_command_with_image_and_ddim_inversion(tiny_model_dir, tmp_path, picture):
    args = ["edit", "a red square", "--to", "a blue square", "--model", str(tiny_model_dir), "--steps", "4"]
    assert main([*args, "--image", str(picture), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    meta = json.loads((tmp_path / "o" / "a-blue-square-0.json").read_text())
    given = meta["given_image"]
    assert given["inversion"] == "ddim" and given["null_text_steps"] == 0 and not given["null_text_losses"]
    assert given["null_text_lr"] == 0
    assert given["fixed_point_steps"] == FIXED_POINT_STEPS == 1  # one checked re-solve a step
    assert meta["edit"]["pinned_steps"] == PINNED_AFTER_DDIM == 0.4


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--null-text"], "null_text_steps 10 needs an image to read (--image FILE)"),
        (["--pinned-steps", "0.5"], "--pinned-steps 0.5 needs an image to pin to (--image FILE)"),
        (["--pinned-steps", "2", "--image", "x.png"], "pinned_steps is 2.0; accepted: a fraction of the sampling"),
    ],
)
def test_edit_command_image_flags_need_an_image(tiny_model_dir, tmp_path, capsys, flags, message):
    args = ["edit", "a red square", "--to", "a blue square", "--model", str(tiny_model_dir), *flags]
    assert main([*args, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_edit_image_on_a_stable_diffusion_pipeline(picture):
    pipe = tiny_sd_pipeline()
    edited = edit_image(pipe, picture, "a red square", "a blue square", null_text_steps=2, num_inference_steps=4)
    assert edited.result.edited.size == (16, 16) and np.isfinite(edited.psnr)
    assert edited.given.inversion.latents.shape == (1, 4, 8, 8)  # the VAE's latents


def test_a_source_prompt_that_does_not_describe_the_image_still_runs(tiny_pipe, picture):
    edited = edit_image(tiny_pipe, picture, "a green star", "a blue star", num_inference_steps=2, plain=False)
    assert edited.result.plain is None and np.isfinite(edited.psnr) and edited.reconstruction.size == (16, 16)


def test_pinned_steps_keep_the_source_on_the_inversion_path(tiny_pipe, picture):
    given = invert_image(tiny_pipe, picture, "a red square", num_inference_steps=6, guidance_scale=5.0)
    runs = {p: edit_image(tiny_pipe, given, "a red square", "a blue square", pinned_steps=p) for p in (0.0, 0.5, 1.0)}
    assert runs[1.0].psnr == float("inf")  # pinned to the end: the source row ends on x_0, the given image itself
    assert np.isfinite(runs[0.0].psnr) and np.isfinite(runs[0.5].psnr)  # free after the pinned steps: it drifts
    assert runs[0.5].result.settings.pinned_steps == 0.5
    plains = [np.asarray(run.result.plain) for run in runs.values()]
    assert all(np.array_equal(plains[0], plain) for plain in plains)  # the plain target row is never pinned
    with pytest.raises(ValueError, match="source_path holds 3 latents; pinning 6 of 6 steps"):
        edit(
            tiny_pipe,
            "a red square",
            "a blue square",
            latents=given.inversion.latents,
            pinned_steps=1.0,
            source_path=given.inversion.trajectory[-2:-5:-1],
            num_inference_steps=6,
        )


def test_direct_inversion_moves_the_targets_by_the_sources_correction():
    from crossattn.editing.direct_inversion import put_on_path

    latents = torch.arange(4 * 2 * 2 * 2, dtype=torch.float32).view(4, 2, 2, 2)  # [source, target, target, plain]
    on_path = torch.full((1, 2, 2, 2), 0.5)  # the path keeps (1, C, H, W)
    out = put_on_path(latents.clone(), on_path, targets=2, carry=True)
    correction = on_path[0] - latents[0]
    assert torch.equal(out[0], on_path[0])
    assert torch.equal(out[1:3], latents[1:3] + correction)  # the edit's difference from the source kept
    assert torch.equal(out[3], latents[3])  # the plain row is left alone
    alone = put_on_path(latents.clone(), on_path, targets=2, carry=False)
    assert torch.equal(alone[1:], latents[1:])  # the source alone pinned (the edit before issue 41)


def test_object_region_is_the_given_objects_pixels_under_the_word_region():
    from crossattn.editing.local_blend import object_region

    image = torch.ones(3, 16, 16)  # white paper in [-1, 1]
    image[:, 6:10, 5:9] = torch.tensor([0.7, -0.6, -0.6])[:, None, None]  # a red square
    image[:, 2:4, 12:14] = torch.tensor([-0.7, -0.3, 0.7])[:, None, None]  # a blue one, outside the region
    region = torch.zeros(16, 16, dtype=torch.bool)
    region[4:9, 3:10] = True  # a coarse, shifted map region: over most of the red square only
    mask = object_region(region, image, grow=0)
    expected = torch.zeros(16, 16, dtype=torch.bool)
    expected[6:10, 5:9] = True
    assert torch.equal(mask, expected)  # the whole red square, nothing of the paper or the blue square
    assert object_region(region, image, grow=1).sum() == 6 * 6
    assert torch.equal(object_region(region, torch.ones(3, 16, 16)), region)  # nothing stands out: the region


def test_direct_inversion_pins_every_step_and_keeps_the_plain_row(tiny_pipe, picture):
    given = invert_image(tiny_pipe, picture, "a red square", num_inference_steps=4, guidance_scale=5.0)
    runs = {
        flag: edit_image(tiny_pipe, given, "a red square", "a blue square", direct_inversion=flag, object_blend=flag)
        for flag in (False, True)
    }
    assert runs[True].result.settings.pinned_steps == 1.0 and runs[True].psnr == float("inf")
    assert np.array_equal(np.asarray(runs[True].result.plain), np.asarray(runs[False].result.plain))
    assert not np.array_equal(np.asarray(runs[True].result.edited), np.asarray(runs[False].result.edited))
