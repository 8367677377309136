"""``crossattn serve --model SDXL``'s edit box on an uploaded image (issue 41): the tiny random SDXL folder, served
at a non-square 32×48, edits an upload through :func:`crossattn.edit_image` with the CLI's settings, so its pictures
are ``crossattn edit --image``'s byte for byte; the maps of the changed word come with them; SDXL's added text and
time conditioning reaches the inversion's passes and the edit's alike; bad input is a message naming the value.

Random weights: what is checked is behaviour, not picture quality (the reconstruction's own numbers are in
test_sdxl_image_edit.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from crossattn.cli import main

gr = pytest.importorskip("gradio")

SOURCE, TARGET = "a red square", "a blue square"
SERVED = (32, 48)  # the server's height, width: generated edits; an upload is read at the model's own 16×16


@pytest.fixture(scope="module")
def sdxl_explorer(family_dir, tmp_path_factory):
    from crossattn.web.session import Explorer

    explorer = Explorer.load(str(family_dir("sdxl")), out=tmp_path_factory.mktemp("serve-sdxl"), height=32, width=48)
    explorer.pipe.set_progress_bar_config(disable=True)
    return explorer


@pytest.fixture(scope="module")
def handlers(sdxl_explorer):
    from crossattn.web.handlers import Handlers

    return Handlers(sdxl_explorer)


def drawing(mode: str = "RGBA", size=(40, 24)):
    """A red square on a light ground, as Gradio hands an upload over (the file's own mode)."""
    image = Image.new("RGB", size, (235, 235, 225))
    image.paste((220, 30, 30), (size[0] // 4, size[1] // 4, size[0] // 4 + size[1] // 2, size[1] * 3 // 4))
    return image.convert(mode)


def edit_seen(handlers, monkeypatch, *args):
    """``handlers.edit(*args)``: ``(gallery, info, Edited)``, the :class:`~crossattn.web.edits.Edited` taken on its
    way back to the handler (not run a second time)."""
    from crossattn.web import handlers as handlers_module

    seen = []
    run_edit = handlers_module.run_edit
    monkeypatch.setattr(handlers_module, "run_edit", lambda *a, **k: seen.append(run_edit(*a, **k)) or seen[-1])
    gallery, info, _ = handlers.edit(*args)
    (edited,) = seen
    return gallery, info, edited


def unet_calls(pipe):
    """``(calls, handle)``: every U-Net call's ``added_cond_kwargs`` as it ran (after the pre-hooks)."""
    calls = []
    handle = pipe.unet.register_forward_hook(
        lambda module, args, kwargs, output: calls.append(kwargs.get("added_cond_kwargs")), with_kwargs=True
    )
    return calls, handle


@pytest.mark.parametrize(("null_text", "steps"), [(False, 3), (True, 2)])  # null-text: 10 Adam steps a step
def test_an_upload_is_edited_as_crossattn_edit_image_edits_the_file(
    handlers, sdxl_explorer, family_dir, monkeypatch, tmp_path, null_text, steps
):
    """The page's pictures are ``crossattn edit --image FILE``'s (DDIM) and ``crossattn.edit_image``'s on the file
    (null-text) byte for byte: one job, with the CLI's :class:`EditSettings`, traced or not."""
    from crossattn.editing.image_edit import edit_image
    from crossattn.editing.settings import EditSettings
    from crossattn.sampling.inversion import psnr

    path = tmp_path / "upload.png"
    drawing().save(path)
    with pytest.warns(UserWarning) as caught:
        gallery, info, edited = edit_seen(
            handlers, monkeypatch, SOURCE, "", 0, steps, 4.0, "default", Image.open(path), TARGET, null_text
        )
    notes = [str(w.message) for w in caught]
    assert "the image is RGBA; converted to RGB (transparency on white)" in notes
    assert "the image is 40x24; resized to the model's 16x16" in notes  # not the server's 32x48
    captions = [caption for _, caption in gallery]
    assert captions == [f"reconstruction: {SOURCE}", f"edited: {TARGET}", f"plain: {TARGET}"] + [
        "'red' in source",
        "'blue' in edited",
        "'blue' in plain",
    ]
    assert all(picture.size == (128, 128) for picture, _ in gallery)  # 16×16 shown 8×
    assert edited.given.size == edited.source.size == edited.edited.size == edited.plain.size == (16, 16)
    assert edited.maps.word_map("red", image=0).shape == edited.maps.word_map("blue", image=1).shape == (16, 16)
    assert edited.psnr == psnr(edited.source, edited.given) and f"{edited.psnr:.2f} dB" in info
    assert ("null-text" in info) == null_text

    if null_text:  # the API's call on the file (the CLI's is the DDIM case's; this one spares a second load)
        with pytest.warns(UserWarning) as read:  # the file's notes: converted, resized
            api = edit_image(
                sdxl_explorer.pipe, path, SOURCE, TARGET, EditSettings(), null_text_steps=10, num_inference_steps=2
            )
        assert [str(w.message).split(" is ", 1)[1] for w in read] == [n.split(" is ", 1)[1] for n in notes[:2]]
        cli = {"source": api.given.image, "reconstruction": api.reconstruction, "edited": api.result.edited}
        cli["plain"] = api.result.plain
    else:
        args = [
            "edit",
            SOURCE,
            "--to",
            TARGET,
            "--image",
            str(path),
            "--model",
            str(family_dir("sdxl")),
            "--steps",
            "3",
        ]
        assert main([*args, "--quiet", "--out", str(tmp_path / "cli")]) == 0
        stem = tmp_path / "cli" / "a-blue-square-0"
        cli = {view: Image.open(f"{stem}.{view}.png") for view in ("source", "reconstruction", "edited", "plain")}
        sidecar = json.loads(stem.with_suffix(".json").read_text())
        assert sidecar["given_image"]["reconstruction_psnr"] == round(edited.psnr, 3)
    views = {"source": edited.given, "reconstruction": edited.source, "edited": edited.edited, "plain": edited.plain}
    for view, picture in views.items():
        assert np.array_equal(np.asarray(cli[view]), np.asarray(picture)), view


def test_added_conditioning_reaches_the_inversion_and_the_edit_alike(sdxl_explorer, monkeypatch):
    """Every pass of the page's edit runs with the six time ids of the 16×16 upload; the inversion's with the
    prompt's pooled text, and so does the edit's source row in both halves (its unconditional states are the
    prompt's own: negative-prompt inversion), while the targets' unconditional half keeps the negative's."""
    from crossattn.sampling.added_conditioning import added_conditions
    from crossattn.web.edits import run_edit
    from crossattn.web.session import Request

    pipe = sdxl_explorer.pipe
    calls, handle = unet_calls(pipe)
    try:
        run_edit(sdxl_explorer, Request.of(SOURCE, steps=3, guidance=4.0, image=drawing("RGB", (16, 16))), TARGET)
    finally:
        handle.remove()
    source, target = (added_conditions(pipe, p, (16, 16))["text_embeds"] for p in (SOURCE, TARGET))
    inversion, edit = [c for c in calls if len(c["time_ids"]) == 1], [c for c in calls if len(c["time_ids"]) == 8]
    assert len(inversion) + len(edit) == len(calls) and len(edit) == 3  # one pass a step: 2 halves × 4 rows
    assert all(c["time_ids"].tolist() == [[16, 16, 0, 0, 16, 16]] * len(c["time_ids"]) for c in calls)
    assert all(torch.equal(c["text_embeds"], source) for c in inversion)
    for c in edit:
        uncond, cond = c["text_embeds"].chunk(2)  # (4, P) each: source, edited, plain, the recolouring's reference
        assert torch.allclose(cond, torch.cat([source, target, target, target]), atol=1e-6)  # a batch of 4
        assert torch.equal(uncond[0], cond[0]) and torch.count_nonzero(uncond[1:]) == 0  # SDXL's empty negative


def test_a_generated_edit_is_at_the_servers_size(handlers, sdxl_explorer):
    calls, handle = unet_calls(sdxl_explorer.pipe)
    try:
        gallery, info, _ = handlers.edit(SOURCE, "", 2, 2, 4.0, "default", None, TARGET, False)
    finally:
        handle.remove()
    assert [picture.size for picture, _ in gallery] == [(48 * 8, 32 * 8)] * 6 and "seed 2" in info
    assert calls and all(c["time_ids"][0].tolist() == [32, 48, 0, 0, 32, 48] for c in calls)


@pytest.mark.parametrize(
    ("image", "target", "message"),
    [
        (drawing("RGB", (200, 10)), TARGET, "the image is 200x10: too narrow to read .* at most 8:1"),
        (Image.new("La", (16, 16)), TARGET, "the image is La, which Pillow cannot convert to RGB"),
        (drawing("RGB", (16, 16)), "A  Red square", "the edit-to prompt 'A  Red square' reads as the prompt itself"),
        (None, SOURCE, f"the edit-to prompt '{SOURCE}' reads as the prompt itself .* change nothing"),
        (drawing("RGB", (16, 16)), " ", "the edit-to prompt is empty"),
    ],
)
def test_bad_edits_are_messages_naming_the_value(handlers, image, target, message):
    with pytest.raises(gr.Error, match=message):
        handlers.edit(SOURCE, "", 0, 2, 4.0, "default", image, target, False)


def test_an_upload_is_read_as_the_same_file(sdxl_explorer, tmp_path):
    """A 16-bit grey upload is scaled to 8 bits as ``edit --image FILE`` reads the file (not clipped to white)."""
    from crossattn.sampling.given_image import given_picture

    deep = Image.fromarray(np.full((24, 24), 32768, np.uint16))
    deep.save(tmp_path / "deep.png")
    with pytest.warns(UserWarning) as caught:
        uploaded, _ = given_picture(sdxl_explorer.pipe, deep)
        read, _ = given_picture(sdxl_explorer.pipe, tmp_path / "deep.png")
    notes = [str(w.message) for w in caught]
    assert "the image is I;16 (65535 = white); scaled to 8 bits" in notes
    assert f"image {tmp_path / 'deep.png'} is I;16 (65535 = white); scaled to 8 bits" in notes
    assert uploaded.size == (16, 16) and np.array_equal(np.asarray(uploaded), np.asarray(read))
    assert np.asarray(uploaded).max() == 128


@pytest.mark.parametrize(
    ("source", "target", "maps"),
    [
        ("a square", TARGET, ["source: no source word", "'blue' in edited", "'blue' in plain"]),  # a word added
        (SOURCE, "a square", ["'square' in source", "'square' in edited", "'square' in plain"]),  # one removed
    ],
)
def test_maps_of_a_word_added_or_removed(handlers, source, target, maps):
    gallery, *_ = handlers.edit(source, "", 0, 2, 4.0, "default", None, target, False)
    assert [caption for _, caption in gallery][3:] == maps
    assert len({picture.size for picture, _ in gallery}) == 1  # every panel at the pictures' scale
