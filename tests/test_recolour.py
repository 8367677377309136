"""Mask-constrained recolouring (issue 41): ``recolour=True`` keeps a given object's outline and shading and
takes only its colour from the edit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crossattn.editing.direct_inversion import recoloured
from crossattn.editing.image_edit import edit_image, invert_image
from crossattn.editing.local_blend import object_matte
from crossattn.editing.settings import GIVEN_IMAGE_DEFAULTS, GIVEN_IMAGE_KNOBS, EditSettings

RED, PAPER = torch.tensor([0.7, -0.6, -0.6]), torch.ones(3)


def drawing() -> tuple[torch.Tensor, torch.Tensor]:
    """A 16×16 red square on white paper ([-1, 1]) with a half-covered rim column at its right, and a coarse
    word region over most of it."""
    image = PAPER[:, None, None].repeat(1, 16, 16)  # (3, 16, 16)
    image[:, 6:10, 5:9] = RED[:, None, None]
    image[:, 6:10, 9] = (0.5 * RED + 0.5 * PAPER)[:, None]  # anti-aliased: half object, half paper
    region = torch.zeros(16, 16, dtype=torch.bool)
    region[4:9, 3:10] = True
    return image, region


def test_object_matte_is_one_on_the_object_a_fraction_on_its_rim_and_zero_on_the_paper():
    image, region = drawing()
    alpha = object_matte(region, image)
    assert alpha.shape == (16, 16) and alpha.min() >= 0 and alpha.max() <= 1
    assert torch.all(alpha[6:10, 5:9] == 1)  # the fill
    assert torch.allclose(alpha[6:10, 9], torch.full((4,), 0.5), atol=1e-5)  # the rim: half of it
    assert alpha[0:3].sum() == 0 and alpha[12:].sum() == 0 and alpha[:, 12:].sum() == 0  # paper
    assert torch.equal(object_matte(region, torch.ones(3, 16, 16)), region.float())  # nothing stands out


def test_recoloured_keeps_the_outline_and_takes_the_colour_shift():
    image, region = drawing()
    alpha = object_matte(region, image)
    shift = torch.tensor([-1.2, 1.1, 0.0])  # red to green
    exact = image + alpha[None] * shift[:, None, None]
    assert torch.allclose(recoloured(image, exact, alpha), exact, atol=1e-6)  # a recolouring is kept as it is
    redrawn = exact.clone()
    redrawn[:, 4:6, 6:8] = (RED + shift)[:, None, None]  # the model's own shape: a bump above the object
    redrawn[:, 9, 5:9] = PAPER[:, None]  # and its bottom row left out
    out = recoloured(image, redrawn, alpha)
    assert torch.equal(out[:, alpha == 0], image[:, alpha == 0])  # every pixel off the object is the source's
    diff = out - image  # (3, 16, 16): the matte times one shift per channel, the outline the source's
    per_pixel = diff[:, alpha == 1]  # (3, fill pixels)
    assert torch.allclose(per_pixel, per_pixel[:, :1].expand_as(per_pixel), atol=1e-6)
    assert torch.allclose(diff[:, 6:10, 9], 0.5 * per_pixel[:, :1].expand(3, 4), atol=1e-6)  # the rim, half
    assert per_pixel[1, 0] > 0.8 and per_pixel[0, 0] < -0.8  # greener and less red: most of the shift


def test_recolour_is_a_given_image_knob_off_by_default_and_checked():
    assert "recolour" in GIVEN_IMAGE_KNOBS and EditSettings().recolour is None
    assert EditSettings().pinned_for(null_text=False).recolour is GIVEN_IMAGE_DEFAULTS["recolour"]
    assert EditSettings(recolour=True).pinned_for(null_text=True).recolour is True
    with pytest.raises(ValueError, match="recolour is 'yes'; accepted: True, False or None"):
        EditSettings(recolour="yes")


def test_a_recoloured_edit_changes_the_given_objects_colour_and_nothing_else(tiny_pipe, picture, monkeypatch):
    """The tiny model's edit, recoloured, with the changed word's region set over most of the square (the
    random tiny model's own maps cover the whole image): the edited image is the reconstruction plus one colour
    shift on the square, its outline the drawing's, to the PNG's rounding; off the square, the reconstruction."""
    from crossattn.editing.local_blend import LocalBlend

    def region(self, size):  # (targets, 1, H, W): rows 3-8, columns 2-10, as a coarse 16x16 map would put it
        mask = torch.zeros(len(self.target_tokens), 1, *size)
        mask[..., 3:9, 2:11] = 1
        return mask

    monkeypatch.setattr(LocalBlend, "mask", region)
    given = invert_image(tiny_pipe, picture, "a red square", num_inference_steps=4, guidance_scale=5.0)
    run = edit_image(tiny_pipe, given, "a red square", "a blue square", recolour=True, shared_steps=0.0, plain=False)
    assert run.result.settings.recolour is True
    source = np.asarray(run.result.source, dtype=np.float64)  # (16, 16, 3)
    diff = np.asarray(run.result.edited, dtype=np.float64) - source
    square = np.zeros((16, 16), dtype=bool)
    square[4:11, 4:11] = True  # the red square, pasted over 4..10
    assert np.abs(diff[~square]).max() <= 1  # the paper: the reconstruction's, to the PNG's rounding
    fill = diff[square]  # (49, 3)
    assert np.ptp(fill, axis=0).max() <= 2  # one shift over the whole square: its outline is the drawing's
    assert np.abs(fill).max() > 0  # and the colour moved


def test_cli_recolour_flag_reaches_the_edit_and_its_sidecar(tiny_model_dir, tmp_path, picture):
    import json

    from crossattn.cli import main

    args = ["edit", "a red square", "--to", "a blue square", "--model", str(tiny_model_dir), "--steps", "2"]
    for flag, expected in (("--recolour", True), ("--no-recolour", False)):
        out = tmp_path / flag.strip("-")
        assert main([*args, "--image", str(picture), flag, "--out", str(out), "--quiet"]) == 0
        assert json.loads((out / "a-blue-square-0.json").read_text())["edit"]["recolour"] is expected
