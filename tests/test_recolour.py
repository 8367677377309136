"""Mask-constrained recolouring (issue 41): ``recolour=True`` keeps a given object's outline and shading and
takes only its colour from the edit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crossattn.editing.direct_inversion import recoloured
from crossattn.editing.image_edit import edit_image, invert_image
from crossattn.editing.local_blend import object_matte, shaded_matte
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


def outlined() -> tuple[torch.Tensor, torch.Tensor]:
    """A 16×16 red square with a one-pixel outline at 55 % of its fill (model space, [-1, 1]) on white, a
    half-covered outline column at its right, and a coarse word region over it."""
    fill = (RED + 1) / 2  # (3,) in [0, 1]
    pixels = torch.ones(3, 16, 16)
    pixels[:, 4:12, 4:12] = (0.55 * fill)[:, None, None]
    pixels[:, 5:11, 5:11] = fill[:, None, None]
    pixels[:, 4:12, 12] = (0.5 * 0.55 * fill + 0.5)[:, None]  # anti-aliased: half outline, half paper
    region = torch.zeros(16, 16, dtype=torch.bool)
    region[3:13, 3:13] = True
    return pixels * 2 - 1, region


def test_shaded_matte_is_each_pixels_shade_of_the_fill():
    image, region = outlined()
    planes = shaded_matte(region, image)
    assert planes.shape == (1, 16, 16)  # one object
    shade = planes[0]
    assert torch.allclose(shade[5:11, 5:11], torch.ones(6, 6), atol=1e-4)  # the fill
    ring = torch.zeros(16, 16, dtype=torch.bool)
    ring[4:12, 4:12], ring[5:11, 5:11] = True, False
    assert torch.allclose(shade[ring], torch.full((int(ring.sum()),), 0.55), atol=1e-4)  # the outline's shade
    assert torch.allclose(shade[4:12, 12], torch.full((8,), 0.275), atol=1e-4)  # half of the outline's shade
    assert shade[:3].abs().max() < 1e-6 and shade[:, 14:].abs().max() < 1e-6  # the paper
    black = image.clone()
    black[:, ring] = -1.0  # a black outline keeps its black: no fill in it
    assert shaded_matte(region, black)[0, ring].abs().max() < 1e-4
    grey = torch.ones(3, 16, 16)
    grey[:, 6:10, 6:10] = 0.2  # grey on white: fill and paper parallel, the plain matte
    assert torch.equal(shaded_matte(region, grey)[0], object_matte(region, grey))
    assert torch.equal(shaded_matte(region, torch.ones(3, 16, 16)), region.float()[None])  # nothing stands out


def test_recolouring_over_the_shaded_matte_gives_the_outline_the_new_colours_shade():
    """An outlined red square recoloured to green: the fill turns green and the outline turns the same shade
    of green, as the outline of a green drawing would be, even when the target step paints both alike."""
    image, region = outlined()
    shade = shaded_matte(region, image)  # (1, H, W)
    green = torch.tensor([-0.6, 0.7, -0.6])
    target = image.clone()
    target[:, 4:12, 4:12] = green[:, None, None]  # the model's own drawing: no outline
    out = recoloured(image, target, shade)
    assert out[1, 7, 7] > 0.6 and out[0, 7, 7] < -0.4 and out[2, 7, 7] < -0.4  # the fill: green
    outline = (out[:, 4, 7] + 1) / 2  # the outline, in [0, 1]
    assert torch.allclose(outline, 0.55 * (out[:, 7, 7] + 1) / 2, atol=1e-4)  # the new fill's shade


def test_each_object_the_region_covers_gets_its_own_shift():
    """The changed word's coarse region over two objects (issue 41's drawing 79: "green square" to "yellow
    square", the region reaching the red triangle above it): the object the target recoloured turns, the one
    it left alone keeps its colour."""
    image, _ = outlined()  # the outlined red square at rows 4-11
    image[:, 13:16, 2:5] = torch.tensor([-0.5, 0.3, -0.5])[:, None, None]  # a green block below it
    region = torch.zeros(16, 16, dtype=torch.bool)
    region[3:16, 1:14] = True
    planes = shaded_matte(region, image)
    assert planes.shape == (2, 16, 16)
    assert (planes[0] > 0).logical_and(planes[1] > 0).sum() == 0  # apart: no pixel in both
    target = image.clone()
    target[:, 13:16, 2:5] = torch.tensor([0.8, 0.6, -0.7])[:, None, None]  # the block turned yellow
    out = recoloured(image, target, planes)
    assert torch.allclose(out[:, 4:13, 4:13], image[:, 4:13, 4:13], atol=1e-5)  # the square: unchanged
    assert torch.allclose(out[:, 14, 3], target[:, 14, 3], atol=1e-5)  # the block: yellow


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
