"""The given-image defaults of issue 41 reach every surface through the one ``EditSettings``: ``shared_steps``
left as ``None`` is a generated edit's ``SHARED_STEPS`` and a given image's ``GIVEN_IMAGE_DEFAULTS``, in the
API's result, the CLI's sidecar and the explorer's request alike."""

from __future__ import annotations

import argparse
import json

import pytest

from crossattn.cli import main
from crossattn.commands.edit import add_parser
from crossattn.editing.image_edit import edit_image
from crossattn.editing.prompt_edit import edit
from crossattn.editing.settings import GIVEN_IMAGE_DEFAULTS, RECOLOUR_COLOUR_EDITS, SHARED_STEPS, EditSettings

from .conftest import generator


def test_shared_steps_are_chosen_by_what_is_edited():
    unset = EditSettings()
    assert unset.shared_steps is None and unset.shared_fraction == SHARED_STEPS
    assert unset.generated().shared_steps == SHARED_STEPS
    assert unset.pinned_for(null_text=False).shared_steps == GIVEN_IMAGE_DEFAULTS["shared_steps"]
    assert EditSettings(shared_steps=0.1).pinned_for(null_text=True).shared_steps == 0.1  # a chosen value stays
    assert EditSettings(shared_steps=0.1).generated().shared_steps == 0.1
    with pytest.raises(ValueError, match="shared_steps is 2"):
        EditSettings(shared_steps=2)


def test_api_records_the_default_each_edit_ran(tiny_pipe, picture):
    generated = edit(tiny_pipe, "a red square", "a blue square", num_inference_steps=2, generator=generator(0))
    given = edit_image(tiny_pipe, picture, "a red square", "a blue square", num_inference_steps=2, plain=False)
    assert generated.settings.shared_steps == SHARED_STEPS
    assert given.result.settings.shared_steps == GIVEN_IMAGE_DEFAULTS["shared_steps"]
    assert given.result.settings.feature_steps == GIVEN_IMAGE_DEFAULTS["feature_steps"]


def test_cli_sidecar_records_the_given_image_defaults(tiny_model_dir, tmp_path, picture, capsys):
    args = ["edit", "a red square", "--to", "a blue square", "--model", str(tiny_model_dir), "--steps", "2"]
    assert main([*args, "--image", str(picture), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    recorded = json.loads((tmp_path / "o" / "a-blue-square-0.json").read_text())["edit"]
    assert {k: recorded[k] for k in GIVEN_IMAGE_DEFAULTS} == {**GIVEN_IMAGE_DEFAULTS, "recolour": True}  # colour
    assert (
        main([*args[:3], "a red circle", *args[4:], "--image", str(picture), "--out", str(tmp_path / "s"), "--quiet"])
        == 0
    )
    recorded = json.loads((tmp_path / "s" / "a-red-circle-0.json").read_text())["edit"]
    assert {k: recorded[k] for k in GIVEN_IMAGE_DEFAULTS} == GIVEN_IMAGE_DEFAULTS  # a shape edit: not recoloured
    text = add_parser(argparse.ArgumentParser().add_subparsers()).format_help()
    assert f"with --image {GIVEN_IMAGE_DEFAULTS['shared_steps']:g}" in " ".join(text.split())


def test_explorer_edit_of_an_upload_runs_the_given_image_defaults(explorer, monkeypatch):
    """The explorer's edit box builds ``EditSettings()`` (the CLI's defaults); on an upload ``edit_image`` runs
    them as a given image's."""
    from PIL import Image

    from crossattn.editing import image_edit
    from crossattn.web.edits import run_edit
    from crossattn.web.session import Request

    seen = []
    real = image_edit.edit_image
    monkeypatch.setattr(image_edit, "edit_image", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    image = Image.new("RGB", (16, 16), "white")
    image.paste((220, 30, 30), (4, 4, 11, 11))
    run_edit(explorer, Request.of("a red square", steps=2, guidance=4.0, image=image), "a blue square")
    (done,) = seen
    expected = {**GIVEN_IMAGE_DEFAULTS, "recolour": RECOLOUR_COLOUR_EDITS}  # a colour edit
    assert {k: getattr(done.result.settings, k) for k in GIVEN_IMAGE_DEFAULTS} == expected


def test_source_negative_guides_the_target_against_the_source_caption(tiny_pipe, picture):
    """``source_negative``: the target row's unconditional half is the source caption (negative-prompt inversion's
    edit); the plain row keeps the negative prompt, so it is the same image with the knob on or off."""
    from crossattn.editing.image_edit import invert_image

    given = invert_image(tiny_pipe, picture, "a red square", num_inference_steps=3)
    runs = {
        flag: edit_image(tiny_pipe, given, "a red square", "a blue square", source_negative=bool(flag), recolour=False)
        for flag in (0, 1)
    }  # not recoloured: a recolouring's target is the source's colours shifted, whatever the target row drew
    recoloured = edit_image(tiny_pipe, given, "a red square", "a blue square", source_negative=True)
    assert recoloured.result.settings.recolour is True  # the negative prompts fit the reference row too
    assert runs[1].result.settings.source_negative is True and runs[0].result.settings.source_negative is False
    assert runs[1].result.plain.tobytes() == runs[0].result.plain.tobytes()
    assert runs[1].result.edited.tobytes() != runs[0].result.edited.tobytes()
    assert runs[1].result.source.tobytes() == runs[0].result.source.tobytes()  # the reconstruction is untouched
    with pytest.raises(ValueError, match="source_negative is 'yes'"):
        EditSettings(source_negative="yes")
