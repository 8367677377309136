"""``crossattn serve`` with an uploaded image, on the tiny model: its word maps drawn on it (the files
``crossattn maps --image`` writes), the edit box with and without an image (the images
``crossattn edit`` makes), conversion notes as warnings, bad input as ``gr.Error``, and ``/generate``
through ``gradio_client`` with the old positional arguments and with an image."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crossattn.cli import main

gr = pytest.importorskip("gradio")
pytest.importorskip("gradio_client")

PROMPT = "a red circle left of a blue square"


@pytest.fixture(scope="module")
def handlers(explorer):
    from crossattn.web.handlers import Handlers

    return Handlers(explorer)


def upload(mode: str = "RGBA", size=(40, 24)):
    """A picture as Gradio hands an upload over (``image_mode=None``: the file's own mode)."""
    colour = {"RGBA": (200, 30, 30, 128), "RGB": (200, 30, 30), "L": 90}[mode]
    image = Image.new(mode, size, colour)
    image.paste(Image.new(mode, (size[0] // 3, size[1] // 2), 0), (2, 2))
    return image


def test_uploaded_image_maps_are_drawn_on_it_and_are_maps_image_files(explorer, tiny_model_dir, tmp_path, monkeypatch):
    from crossattn.attention.maps import AttentionMaps
    from crossattn.sampling.given_image import fit_image
    from crossattn.web.session import Request

    picture = upload()
    with pytest.warns(UserWarning) as caught:
        result = explorer.run(Request.of(PROMPT, seed=3, steps=4, image=picture, strength=0.5))
    notes = [str(w.message) for w in caught]
    assert "the image is RGBA; converted to RGB (transparency on white)" in notes
    assert "the image is 40x24; resized to the model's 16x16" in notes
    with pytest.warns(UserWarning):
        fitted, _ = fit_image(picture, (16, 16))
    assert result.image.size == (16, 16) and np.array_equal(np.array(result.image), np.array(fitted))
    assert result.cross.word_map("circle").shape == (16, 16) and result.cross.num_steps == 2  # last half of 4
    assert result.denoised.size == (16, 16) and result.self_mean.self_layers

    stem = "a-red-circle-left-of-a-blue-square-upload-3"
    names = [p.name for p in result.files]
    suffixes = (".png", ".json", ".maps.safetensors", ".maps.json", ".maps.png", ".denoised.png", ".maps.html")
    assert names == [stem + s for s in suffixes] + ["upload.png"]
    monkeypatch.chdir(result.files[0].parent)  # `crossattn maps --image upload.png` on the same upload
    args = ["maps", PROMPT, "--image", "upload.png", "--model", str(tiny_model_dir), "--seed", "3", "--steps", "4"]
    assert main([*args, "--quiet", "--out", str(tmp_path)]) == 0  # its notes go to stderr
    for suffix in (".png", ".denoised.png", ".maps.png"):  # the sidecar and maps differ in the notes' wording
        assert (tmp_path / f"{stem}{suffix}").read_bytes() == result.files[0].with_suffix(suffix).read_bytes()
    ours, cli = (AttentionMaps.load(d / f"{stem}.maps.safetensors") for d in (result.files[0].parent, tmp_path))
    assert ours.tensors.keys() == cli.tensors.keys()
    assert all(torch.equal(ours.tensors[n], cli.tensors[n]) for n in cli.tensors)
    ours, cli = (json.loads((d / f"{stem}.json").read_text()) for d in (result.files[0].parent, tmp_path))
    assert cli["given_image"].pop("notes")[0] == "image upload.png is RGBA; converted to RGB (transparency on white)"
    assert ours["given_image"].pop("notes") == notes[:2]
    assert ours == cli and ours["relation_guidance"] == 0.0


def test_every_view_of_an_uploaded_image(explorer, handlers):
    from crossattn.web import render
    from crossattn.web.session import Request

    result = explorer.run(Request.of("a red circle", steps=4, image=upload("RGB", (16, 16)), strength=1.0))
    views = handlers.views(result)
    assert views[0].size == (128, 128) and len(views[1]) == 3  # a, red, circle
    assert result.cross.num_steps == 4 and len(handlers.show_step(result, 4)) == 3
    frame, _ = views[1][0]
    assert frame.size == render.upscaled(result.image).size
    assert np.array_equal(np.array(render.upscaled(result.image)), np.array(views[0]))
    layer = result.cross.layer_names[0]
    assert len(handlers.show_heads(result, layer)) == 3 * result.cross.meta["layers"][layer]["heads"]
    assert render.pixel_panel(result.self_mean, result.image, 3, 4).size == (128, 128)


def test_an_upload_png_cannot_hold_is_saved_as_the_rgb_the_model_reads(explorer):
    from crossattn.web.session import Request

    with pytest.warns(UserWarning, match="the image is CMYK; converted to RGB"):
        result = explorer.run(Request.of("a red circle", steps=2, image=upload("RGB", (16, 16)).convert("CMYK")))
    saved = Image.open(result.files[-1])
    assert result.files[-1].name == "upload.png" and saved.mode == "RGB"
    assert np.array_equal(np.array(saved), np.array(result.image))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"strength": 0}, "strength 0 is not accepted"),
        ({"strength": 1.5}, "strength 1.5 is not accepted"),
        ({"strength": None}, "strength None is not accepted"),
        ({"image": "photo.png"}, "the image is a str"),
    ],
)
def test_bad_uploads_name_the_value(explorer, change, message):
    from crossattn.web.session import Request

    request = Request.of(**{"prompt": PROMPT, "image": upload("RGB"), **change})
    with pytest.raises(ValueError, match=message):
        request.check(explorer.pipe.tokenizer, explorer.max_length)
    no_image = Request.of(PROMPT, strength=0).check(explorer.pipe.tokenizer, explorer.max_length)
    assert no_image.strength == 0.5


def test_edit_without_an_image_is_crossattn_edit(handlers, tiny_model_dir, tmp_path):
    gallery, info, files = handlers.edit("a red circle", "", 4, 3, 4.0, "default", None, "a blue circle", False)
    assert [caption for _, caption in gallery] == [
        "source: a red circle",
        "edited: a blue circle",
        "plain: a blue circle",
        "'red' in source",  # under each picture, its map of the changed word
        "'blue' in edited",
        "'blue' in plain",
    ]
    assert all(picture.size == (128, 128) for picture, _ in gallery) and "seed 4" in info
    args = ["edit", "a red circle", "--to", "a blue circle", "--model", str(tiny_model_dir), "--seed", "4"]
    assert main([*args, "--steps", "3", "--quiet", "--out", str(tmp_path)]) == 0
    for (picture, _), view in zip(gallery[:3], ("source", "edited", "plain"), strict=True):
        cli = Image.open(tmp_path / f"a-blue-circle-4.{view}.png")
        assert np.array_equal(np.array(picture), np.array(cli.resize((128, 128), Image.NEAREST))), view
    # the downloads are the CLI's files: the same names; the same bytes but for the sidecar's model path
    names = sorted(Path(f).name for f in files)
    assert (
        names
        == sorted(p.name for p in tmp_path.iterdir())
        == [
            "a-blue-circle-4.compare.png",
            "a-blue-circle-4.edited.png",
            "a-blue-circle-4.json",
            "a-blue-circle-4.plain.png",
            "a-blue-circle-4.source.png",
        ]
    )
    for f in files:
        if f.endswith(".png") and not f.endswith(".compare.png"):  # the figure's bytes carry matplotlib's metadata
            assert Path(f).read_bytes() == (tmp_path / Path(f).name).read_bytes(), f
    web, cli = (json.loads(Path(d, "a-blue-circle-4.json").read_text()) for d in (Path(files[0]).parent, tmp_path))
    assert web["edit"] == cli["edit"] and web["target_prompt"] == cli["target_prompt"] == "a blue circle"


@pytest.mark.parametrize("null_text", [False, True])
def test_edit_of_an_uploaded_image(handlers, monkeypatch, null_text):
    """The edit box on an upload; the edit it ran (:func:`crossattn.web.edits.run_edit`, seen on its way back
    to the handler rather than run a second time) is what the page shows."""
    from crossattn.web import handlers as handlers_module

    edits = []
    run_edit = handlers_module.run_edit
    monkeypatch.setattr(handlers_module, "run_edit", lambda *a, **k: edits.append(run_edit(*a, **k)) or edits[-1])
    with pytest.warns(UserWarning, match="the image is L; converted to RGB"):
        gallery, info, files = handlers.edit(
            "a red circle", "", 0, 3, 4.0, "default", upload("L"), "a blue circle", null_text
        )
    assert [c.split(":")[0] for _, c in gallery[:3]] == ["reconstruction", "edited", "plain"] and len(gallery) == 6
    assert "dB" in info and ("null-text" in info) == null_text
    (edited,) = edits
    assert math.isfinite(edited.psnr) and f"{edited.psnr:.2f} dB" in info
    assert edited.given.mode == "RGB" and edited.given.size == edited.edited.size == (16, 16)
    names = {Path(f).name for f in files}
    assert {"upload.png", "a-blue-circle-0.reconstruction.png", "a-blue-circle-0.json"} <= names
    (sidecar,) = (json.loads(Path(f).read_text()) for f in files if f.endswith(".json"))
    given = sidecar["given_image"]
    assert given["file"] == "upload.png" and given["inversion"] == ("null-text" if null_text else "ddim")
    assert given["reconstruction_psnr"] == round(edited.psnr, 3)


@pytest.mark.parametrize(
    ("prompt", "target", "message"),
    [
        ("a red circle", "  ", "the edit-to prompt is empty"),
        ("", "a blue circle", "the prompt is empty"),
        ("a red circle", "a blue circle " * 10, "the edit-to prompt is too long"),
    ],
)
def test_bad_edits_are_messages(handlers, prompt, target, message):
    with pytest.raises(gr.Error, match=message):
        handlers.edit(prompt, "", 0, 3, 4.0, "default", None, target, False)


def test_bad_upload_strength_is_a_message(handlers):
    with pytest.raises(gr.Error, match="strength 0 is not accepted"):
        handlers.generate("a red circle", "", 0, 2, 4.0, "default", 50.0, upload("RGB"), 0)


def test_generate_endpoint_old_positional_arguments_and_an_image(server, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    out = client.predict("a red circle", "", 2, 2, 4.0, "default", 50.0, api_name="/generate")  # the seven of old
    assert [p.rsplit("/", 1)[-1] for p in out[7]][0] == "a-red-circle-2-0.png"
    path = tmp_path / "photo.png"
    upload("RGBA").save(path)
    out = client.predict(
        "a red circle", "", 2, 4, 4.0, "default", 50.0, handle_file(str(path)), 0.75, api_name="/generate"
    )
    assert Image.open(out[0]).size == (128, 128)
    names = [p.rsplit("/", 1)[-1] for p in out[7]]
    assert names[0] == "a-red-circle-upload-2.png" and "a-red-circle-upload-2.denoised.png" in names
    assert [item["caption"].split(" ")[0] for item in out[1]] == ["a", "red", "circle"]
    gallery, info, files = client.predict(
        "a red circle", "", 0, 3, 4.0, "default", handle_file(str(path)), "a blue circle", False, api_name="/edit"
    )
    assert len(gallery) == 6 and "dB" in info  # three pictures, the changed word's map under each
    assert "a-blue-circle-0.edited.png" in [p.rsplit("/", 1)[-1] for p in files]
