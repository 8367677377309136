"""Recolouring (issue 41): ``recolour=True`` keeps a given object's outline and shading and takes only its
colour, from a reference row: the target prompt drawn from fresh noise."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from crossattn.editing.image_edit import edit_image, invert_image
from crossattn.editing.local_blend import LocalBlend, object_matte, shaded_matte
from crossattn.editing.recolour import recoloured
from crossattn.editing.settings import GIVEN_IMAGE_DEFAULTS, GIVEN_IMAGE_KNOBS, RECOLOUR_COLOUR_EDITS, EditSettings

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


GREEN = torch.tensor([-0.6, 0.7, -0.6])


def edit_rows(source: torch.Tensor, reference: torch.Tensor, maps: torch.Tensor, changed=()):
    """A controller after an edit's last step, as :func:`recoloured` reads it: rows ``[source, target, reference]``
    of ``(3, 16, 16)`` images (the target a copy of the source), the given image the source, and the local
    blend's summed ``maps`` ``(3, 16, 16)`` (source words, target words, the target words in the reference row)."""
    blend = LocalBlend([1], [[1]], reference=True)
    blend.maps = maps.reshape(3, -1).float()  # (R, h*w): a 16x16 layer
    token_map = SimpleNamespace(changed=list(changed))  # the changed words, as the alignment finds them
    controller = SimpleNamespace(local_blend=blend, source_path=[source[None]], token_maps=[token_map])
    return controller, torch.stack([source, source.clone(), reference])  # (3, 3, 16, 16)


def test_the_target_is_the_source_with_the_reference_rows_colour_over_its_shading():
    """An outlined red square; the reference row draws a green square of its own shape and place: the target is the
    given square, fill green, outline the same shade of green; every other pixel the source row's."""
    image, region = outlined()
    reference = torch.ones(3, 16, 16)
    reference[:, 1:8, 8:15] = GREEN[:, None, None]  # the model's own square: elsewhere, bigger, no outline
    maps = torch.zeros(3, 16, 16)
    maps[0, 4:12, 4:12] = maps[2, 1:8, 8:15] = 1.0  # each word's map on its own row's object
    controller, rows = edit_rows(image, reference, maps)
    out = recoloured(controller, rows, pixels=True)
    assert torch.equal(out[0], rows[0]) and torch.equal(out[2], rows[2])  # the source and reference rows as they were
    assert torch.allclose(out[1, :, 7, 7], GREEN, atol=1e-4)  # the fill: the reference row's green
    outline = (out[1, :, 4, 7] + 1) / 2  # (3,) in [0, 1]
    assert torch.allclose(outline, 0.55 * (GREEN + 1) / 2, atol=1e-4)  # the outline: green's shade
    alpha = shaded_matte(region, image)[0]
    assert torch.equal(out[1][:, alpha == 0], image[:, alpha == 0])  # off the square: the source row


def test_the_object_under_the_words_peak_is_recoloured_and_the_other_kept():
    """The changed word's region over two objects (issue 41's drawing 79: the coarse region reaching the object
    above): only the one where its map peaks turns, though the other is larger; the reference row's object where the
    target word's map peaks gives the colour, not a second object there."""
    image, _ = outlined()
    image[:, 13:16, 1:5] = torch.tensor([-0.5, 0.3, -0.5])[:, None, None]  # a green block below the square
    reference = torch.ones(3, 16, 16)
    yellow = torch.tensor([0.8, 0.6, -0.7])
    reference[:, 1:5, 1:5] = yellow[:, None, None]  # the changed word's object
    reference[:, 10:14, 10:14] = torch.tensor([0.7, -0.6, -0.6])[:, None, None]  # red: the other one
    maps = torch.zeros(3, 16, 16)
    maps[0, 3:16, 0:14] = 0.5  # the source word's region covers both objects...
    maps[0, 13:16, 1:5] = 1.0  # ...and peaks on the block
    maps[2, :12] = 0.5  # the target word's region in the reference row reaches the red object too
    maps[2, 1:5, 1:5] = 1.0
    controller, rows = edit_rows(image, reference, maps)
    out = recoloured(controller, rows, pixels=True)
    assert torch.allclose(out[1, :, 4:13, 4:13], image[:, 4:13, 4:13], atol=1e-5)  # the square: unchanged
    assert torch.allclose(out[1, :, 14, 2], yellow, atol=1e-4)  # the block: yellow


def test_the_named_colour_chooses_the_object_where_the_map_peaks_on_the_wrong_one():
    """Issue 41's drawing 88: "a blue triangle below an orange square" to "... a red square", and the source's
    "an orange" map peaking on the blue object (a causal text encoder's colour word has seen the objects before
    it): the orange object is recoloured, since the words name orange; without a colour name, the peak's."""
    image = torch.ones(3, 16, 16)
    orange, blue = torch.tensor([1.0, 0.3, -1.0]), torch.tensor([-0.7, -0.6, 0.8])
    image[:, 2:7, 2:7] = orange[:, None, None]
    image[:, 9:14, 9:14] = blue[:, None, None]
    reference = torch.ones(3, 16, 16)
    reference[:, 3:8, 3:8] = torch.tensor([0.8, -0.8, -0.8])[:, None, None]  # red
    maps = torch.zeros(3, 16, 16)
    maps[0, 2:14, 2:14], maps[0, 9:14, 9:14] = 0.5, 1.0  # over both, peaking on the blue one
    maps[2, 3:8, 3:8] = 1.0
    for changed, recoloured_one in (([("an orange", "a red")], slice(2, 7)), ([("x", "y")], slice(9, 14))):
        controller, rows = edit_rows(image, reference, maps, changed)
        out = recoloured(controller, rows, pixels=True)
        moved = (out[1] - image).abs().sum(0) > 1e-4  # (16, 16)
        assert moved[recoloured_one, recoloured_one].all() and moved.sum() <= 7 * 7  # that object only (its rim)


def test_no_object_in_the_reference_row_leaves_the_rows_as_they_were():
    image, _ = outlined()
    maps = torch.zeros(3, 16, 16)
    maps[0, 4:12, 4:12] = maps[2, 2:6, 2:6] = 1.0
    controller, rows = edit_rows(image, torch.ones(3, 16, 16), maps)  # the reference row drew nothing
    assert torch.equal(recoloured(controller, rows, pixels=True), rows)


def test_recolour_is_a_given_image_knob_on_for_colour_edits_and_checked():
    assert "recolour" in GIVEN_IMAGE_KNOBS and EditSettings().recolour is None
    assert EditSettings().pinned_for(null_text=False).recolour is GIVEN_IMAGE_DEFAULTS["recolour"] is False
    assert EditSettings().pinned_for(null_text=True, colour_edit=True).recolour is RECOLOUR_COLOUR_EDITS is True
    assert EditSettings(recolour=False).pinned_for(null_text=False, colour_edit=True).recolour is False  # asked
    assert EditSettings(recolour=True).pinned_for(null_text=True).recolour is True
    with pytest.raises(ValueError, match="recolour is 'yes'; accepted: True, False or None"):
        EditSettings(recolour="yes")


def test_a_recoloured_edit_changes_the_given_objects_colour_and_nothing_else(tiny_pipe, picture, monkeypatch):
    """The tiny model's edit, recoloured, with the changed word's region set over most of the square (the
    random tiny model's own maps cover the whole image): the edited image is the reconstruction plus one colour
    shift on the square, its outline the drawing's, to the PNG's rounding; off the square, the reconstruction."""
    from crossattn.editing.local_blend import LocalBlend

    def region(self, size):  # (R, 1, H, W): rows 3-8, columns 2-10, as a coarse 16x16 map would put it
        mask = torch.zeros(len(self.maps), 1, *size, dtype=torch.bool)
        mask[..., 3:9, 2:11] = True
        return mask

    monkeypatch.setattr(LocalBlend, "regions", region)
    given = invert_image(tiny_pipe, picture, "a red square", num_inference_steps=4, guidance_scale=5.0)
    run = edit_image(tiny_pipe, given, "a red square", "a blue square", recolour=True, shared_steps=0.0, plain=False)
    assert run.result.settings.recolour is True
    source = np.asarray(run.result.source, dtype=np.float64)  # (16, 16, 3)
    edited = np.asarray(run.result.edited, dtype=np.float64)
    diff = edited - source
    square = np.zeros((16, 16), dtype=bool)
    square[4:11, 4:11] = True  # the red square, pasted over 4..10
    assert np.abs(diff[~square]).max() <= 1  # the paper: the reconstruction's, to the PNG's rounding
    assert np.abs(diff[square]).max() > 0  # and the colour moved
    unclipped = square[..., None] & (edited > 0) & (edited < 255)  # (16, 16, 3): the random model's colour may
    assert unclipped.sum() >= 10  # push a channel past 0 or 255
    for channel in range(3):  # one shift over the whole square, where not clipped: its outline is the drawing's
        shifts = diff[unclipped[..., channel], channel]
        assert shifts.size == 0 or np.ptp(shifts) <= 2


def test_cli_recolour_flag_reaches_the_edit_and_its_sidecar(tiny_model_dir, tmp_path, picture):
    import json

    from crossattn.cli import main

    args = ["edit", "a red square", "--to", "a blue square", "--model", str(tiny_model_dir), "--steps", "2"]
    for flag, expected in (("--recolour", True), ("--no-recolour", False), ("--quiet", True)):  # a colour edit
        out = tmp_path / flag.strip("-")
        assert main([*args, "--image", str(picture), flag, "--out", str(out), "--quiet"]) == 0
        assert json.loads((out / "a-blue-square-0.json").read_text())["edit"]["recolour"] is expected


def test_a_recolouring_samples_a_reference_row_from_fresh_noise_last(tiny_pipe, picture, monkeypatch):
    """The batch of a recoloured edit of a given image: ``[source, target, plain, reference]``, the first three
    from the inverted noise, the reference from fresh noise (the same every run); without recolour, no reference."""
    from crossattn.models.pipeline import CrossAttnPipeline

    starts = []
    real = CrossAttnPipeline.__call__

    def spy(self, prompt, *args, **kwargs):
        starts.append((list(prompt), kwargs["latents"].clone()))
        return real(self, prompt, *args, **kwargs)

    monkeypatch.setattr(CrossAttnPipeline, "__call__", spy)
    given = invert_image(tiny_pipe, picture, "a red square", num_inference_steps=3)
    for recolour in (True, True, False):
        edit_image(tiny_pipe, given, "a red square", "a blue square", recolour=recolour)
    (prompts, first), (_, again), (plain_prompts, plain) = starts
    assert prompts == ["a red square", *["a blue square"] * 3] and len(plain_prompts) == 3
    assert all(torch.equal(first[i], given.inversion.latents[0]) for i in range(3))
    assert not torch.allclose(first[3], first[0]) and torch.equal(first, again)  # fresh, and the same each run
    assert torch.equal(plain, first[:3])
