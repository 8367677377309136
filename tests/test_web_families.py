"""``crossattn serve --model`` on every model family (SD-1.5, SDXL, SD3, Flux, Qwen-Image, Flux.2, SD3.5, PixArt-Σ,
Sana): tiny random pipelines served at a
non-square 64×96 size. One request per family writes ``generate --maps --height 64 --width 96``'s files, and every view
of the page draws: word overlays, the layer grid, steps, heads, and a click near the right edge (its self-attention
panel and the words it reads). Sizes the model does not take are errors naming them, at load and per request; and
``/generate`` through ``gradio_client`` on a served Flux folder."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from crossattn.cli import main

from .conftest import free_port

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")

FAMILIES = ("sd15", "sdxl", "sd3", "flux", "qwenimage", "flux2", "flux2-dev", "sd35", "pixart-sigma", "sana")
JOINT = ("sd3", "flux", "qwenimage", "flux2", "flux2-dev", "sd35")  # text and image keys in one softmax
HEIGHT, WIDTH = 64, 96  # non-square; every family takes it
PROMPT = "a red circle left of a blue square"


@pytest.fixture(scope="module")
def family_explorer(family_dir, tmp_path_factory):
    """``family_explorer(name)``: the explorer on a family's folder at 64×96, one per family and module."""
    from crossattn.web.session import Explorer

    loaded = {}

    def explorer(name: str) -> Explorer:
        if name not in loaded:
            out = tmp_path_factory.mktemp(f"serve-{name}")
            loaded[name] = Explorer.load(str(family_dir(name)), out=out, height=HEIGHT, width=WIDTH)
            loaded[name].pipe.set_progress_bar_config(disable=True)
        return loaded[name]

    return explorer


@pytest.fixture(scope="module")
def family_result(family_explorer):
    """``family_result(name)``: the explorer's answer to one request (:data:`PROMPT`, seed 3, 2 steps) on a family, once
    per family and module: the request test compares its files with the CLI's, the views test draws it (neither
    changes it). Seed 3 (not the default 0): the files must carry the request's own seed; on PixArt-Σ it also once made the
    pixel shares sum past 1 (T5's first piece counted as <start> too)."""
    from crossattn.web.session import Request

    results = {}

    def result(name: str):
        if name not in results:
            results[name] = family_explorer(name).run(Request.of(PROMPT, seed=3, steps=2))
        return results[name]

    return result


@pytest.mark.parametrize("name", FAMILIES)
def test_a_request_writes_generate_maps_files_at_the_servers_size(family_result, family_dir, name, tmp_path):
    from crossattn.attention.maps import AttentionMaps

    result = family_result(name)
    assert result.image.size == (WIDTH, HEIGHT)
    assert result.words == PROMPT.split()
    stem = "a-red-circle-left-of-a-blue-square-3-0"
    suffixes = (".png", ".json", ".maps.safetensors", ".maps.json", ".maps.png", ".maps.html")
    assert [p.name for p in result.files] == [stem + s for s in suffixes]
    assert all(p.is_file() for p in result.files)
    sidecar = json.loads(result.files[1].read_text())
    assert (sidecar["height"], sidecar["width"]) == (HEIGHT, WIDTH)
    assert AttentionMaps.load(result.files[2]).image_size == (HEIGHT, WIDTH)
    args = ["generate", PROMPT, "--model", str(family_dir(name)), "--seed", "3", "--steps", "2", "--maps", "--quiet"]
    assert main([*args, "--height", str(HEIGHT), "--width", str(WIDTH), "--out", str(tmp_path)]) == 0
    for path in result.files[:3]:  # the image, its sidecar and its maps are the CLI's, byte for byte
        assert path.read_bytes() == (tmp_path / path.name).read_bytes(), path.name


@pytest.mark.parametrize("name", FAMILIES)
def test_every_view_and_a_click_near_the_right_edge(family_explorer, family_result, name):
    from crossattn.web import render
    from crossattn.web.handlers import Handlers

    result = family_result(name)  # the request test's
    scale = render.display_scale(result.image)
    shown = (WIDTH * scale, HEIGHT * scale)
    image, overlays, grid, _, steps, _, heads, *_ = Handlers(family_explorer(name)).views(result)
    assert image.size == shown
    assert [c.split(" ")[0] for _, c in overlays] == list(dict.fromkeys(PROMPT.split()))
    assert all(frame.size == shown for frame, _ in overlays + steps + heads)
    assert all(float(c.split(" ")[1]) > 0 for _, c in overlays)  # joint models' small maps: no "0.00"
    assert len(render.step_overlays(result.cross, result.image, 2)) == len(overlays)
    assert grid.height > len(result.cross.cross_layers) * HEIGHT  # one row per layer, each panel 64 high or more
    x, y = render.to_pixel([shown[0] - 1, shown[1] // 2], result.image)  # the last column
    assert (x, y) == (WIDTH - 1, HEIGHT // 2)
    if name == "sana":  # linear self-attention: no map, the click shows the words only
        assert result.self_mean is None
    else:
        assert render.pixel_panel(result.self_mean, result.image, x, y).size == shown
    reads = render.pixel_words(result.cross, x, y)
    assert all(word in reads for word in PROMPT.split())
    assert sum(reads.values()) == pytest.approx(1.0, abs=1e-4) and all(v >= 0 for v in reads.values())
    joint = name in JOINT
    assert render.IMAGE_TOKENS not in reads  # joint models: words renormalised over the text keys (issue 38)
    assert ("joint attention" in render.reads_label(result.cross, x, y)) == joint
    with pytest.raises(ValueError, match=r"pixel \(96, 0\) is outside the 96x64 image"):
        render.to_pixel([shown[0], 0], result.image)


@pytest.mark.parametrize("name", ["sd15", "flux"])
def test_text_share_is_one_on_a_unet_and_the_joint_rows_text_block(family_explorer, name):
    from crossattn.web import render
    from crossattn.web.session import Request

    result = family_explorer(name).run(Request.of("a red circle", steps=1))
    share = render.text_share(result.cross)  # (H, W)
    assert share.shape == (HEIGHT, WIDTH)
    if name == "sd15":
        assert torch.allclose(share, torch.ones_like(share), atol=1e-4)
    else:  # the text block of one softmax over text and image tokens: the words are part of it
        words = sum(result.cross.word_map(w) for w in ("a", "red", "circle"))
        assert (share < 1).all() and (words <= share + 1e-6).all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"height": 30}, "height 30 is not accepted by FluxPipeline: give a multiple of 4"),
        ({"width": 50, "height": 32}, "width 50 is not accepted by FluxPipeline"),
        ({"width": -8}, "width -8 is not accepted; give a whole number from 0 to 4096"),
        ({"width": 8192}, "width 8192 is not accepted; give a whole number from 0 to 4096"),
        ({"height": 32.5}, "height 32.5 is not accepted"),
        ({"image": Image.new("RGB", (8, 8)), "height": 32}, "height 32 / width None with an image"),
    ],
)
def test_bad_sizes_are_value_errors_naming_them(family_explorer, change, message):
    from crossattn.web.session import Request

    with pytest.raises(ValueError, match=message):
        family_explorer("flux").run(Request.of(PROMPT, steps=1, **change))


def test_a_request_of_another_size(family_explorer):
    from crossattn.web.session import Request

    result = family_explorer("sd3").run(Request.of("a red circle", steps=1, height=32, width=48))
    assert result.image.size == (48, 32) and result.cross.word_map("circle").shape == (32, 48)


def test_serve_checks_the_size_and_dtype_before_serving(family_dir, capsys):
    folder = str(family_dir("sd3"))
    assert main(["serve", "--model", folder, "--height", "30", "--port", str(free_port())]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(
        "height 30 is not accepted by StableDiffusion3Pipeline: give a multiple of 4 (its own size is 64x64)"
    )
    assert main(["serve", "--model", folder, "--dtype", "float16", "--port", str(free_port())]) == 2
    assert "dtype float16 needs a GPU device" in capsys.readouterr().err


@pytest.fixture(scope="module")
def flux_server(family_explorer):
    """The page for the Flux explorer (64×96) served on a free local port; its URL."""
    from crossattn.web.app import build_app, launch

    app = build_app(family_explorer("flux"))
    _, url, _ = launch(app, port=free_port(), block=False)
    yield url
    app.close()


def test_generate_endpoint_on_a_served_flux_folder(flux_server):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    from crossattn.web import render

    client = Client(flux_server, verbose=False)
    out = client.predict(prompt="a red circle", seed=2, steps=2, api_name="/generate")
    scale = render.display_scale(Image.new("RGB", (WIDTH, HEIGHT)))
    assert Image.open(out[0]).size == (WIDTH * scale, HEIGHT * scale)
    assert [item["caption"].split(" ")[0] for item in out[1]] == ["a", "red", "circle"]
    assert [p.rsplit("/", 1)[-1] for p in out[7]][:2] == ["a-red-circle-2-0.png", "a-red-circle-2-0.json"]
    other = client.predict(prompt="a red circle", steps=1, height=32, width=48, api_name="/generate")
    assert Image.open(other[0]).size == (48 * 8, 32 * 8)
    with pytest.raises(AppError, match="height 30 is not accepted by FluxPipeline"):
        client.predict(prompt="a red circle", steps=1, height=30, api_name="/generate")
    again = client.predict(prompt="a blue square", steps=1, api_name="/generate")  # still serving
    assert Image.open(again[0]).size == (WIDTH * scale, HEIGHT * scale)


def test_an_upload_on_a_joint_model_is_read_at_its_own_size(family_explorer):
    """An uploaded image on Flux: its img2img pipeline denoises it under the trace (``maps --image``'s path)."""
    from crossattn.web.session import Request

    upload = Image.new("RGB", (40, 40), "white")
    upload.paste((220, 30, 30), (8, 8, 24, 24))
    with pytest.warns(UserWarning, match="resized to the model's 256x256"):
        result = family_explorer("flux").run(Request.of(PROMPT, steps=2, image=upload))
    assert result.image.size == (256, 256) and result.words == PROMPT.split()
    assert result.cross.word_map("red").shape == (256, 256)
