"""The web explorer and the ``.maps.html`` page driven in a real headless Chromium (Debian's
``chromium``; .ci/run installs it) through Playwright, with every request that would leave the
machine refused and recorded: both pages must work offline.

Served page: type a prompt, press Generate, wait for the image and the word overlays, click a pixel,
see the self-attention panel and the words that pixel reads; on the tiny crossattn U-Net, and on a
tiny Flux folder (an MM-DiT: joint attention) served by ``crossattn serve --model`` at a non-square size
(``cli.main`` in a thread). Upload an image through the file input:
its maps appear with the conversion notes as warnings, the downloads are ``maps --image``'s, and the
edit box shows reconstruction, edited and plain with the PSNR. ``.maps.html``: switch word and step,
and the map the page draws equals :meth:`AttentionMaps.word_map` (up to the file's uint8 storage).
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time

import pytest
import torch

from crossattn.attention.trace import trace

from .conftest import free_port, generator

pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)"),
]
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PROMPT = "a red circle left of a blue square"
LOCAL = ("http://127.0.0.1", "http://localhost", "data:", "blob:", "file:")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A page that refuses (and records in ``page.external``) every request off this machine."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.external = []

    def route(r):
        if r.request.url.startswith(LOCAL):
            r.continue_()
        else:
            page.external.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("request", lambda r: None if r.url.startswith(LOCAL) else page.external.append(r.url))
    yield page
    page.close()


def generate_on(page, url: str, steps: int) -> None:
    """Open the served page, generate :data:`PROMPT` and wait for its seven word overlays."""
    page.goto(url)
    page.fill("#prompt textarea", PROMPT)
    page.fill("#steps input", str(steps))
    page.click("#generate")
    page.wait_for_selector("#image img", timeout=60_000)
    page.wait_for_function("document.querySelectorAll('#overlays img').length === 7", timeout=30_000)
    captions = page.locator("#overlays").inner_text()
    assert all(word in captions for word in ("red", "circle", "left", "blue", "square"))


def test_served_page_generate_and_click_a_pixel(server, browser, page, tmp_path):
    generate_on(page, server, 3)
    assert page.locator("#files").inner_text().count("a-red-circle-left-of-a-blue-square-0-0") >= 3

    page.wait_for_function("document.querySelector('#image img').complete")
    box = page.locator("#image img").bounding_box()
    page.locator("#image img").click(position={"x": box["width"] * 0.3, "y": box["height"] * 0.6})
    page.wait_for_selector("#pixel img", timeout=30_000)
    page.wait_for_function("document.querySelector('#reads').innerText.includes('square')", timeout=30_000)
    side = round(box["width"] / 8)  # the image is shown 8x
    assert f"self-attention of pixel ({int(side * 0.3)}, {int(side * 0.6)})" in page.locator("#pixel").inner_text()

    other = browser.new_page()  # a second tab: its own request, its own maps
    other.goto(server)
    other.fill("#prompt textarea", "a green triangle")
    other.fill("#steps input", "2")
    other.click("#generate")
    other.wait_for_function("document.querySelectorAll('#overlays img').length === 3", timeout=60_000)
    other.close()
    page.locator("#image img").click(position={"x": box["width"] * 0.7, "y": box["height"] * 0.2})
    page.wait_for_function(f"document.querySelector('#pixel').innerText.includes('({int(side * 0.7)}, ')")
    assert "square" in page.locator("#reads").inner_text() and "triangle" not in page.locator("#reads").inner_text()

    page.fill("#prompt textarea", "")  # bad input: a message in the page, the server keeps serving
    page.click("#generate")
    page.wait_for_selector("text=the prompt is empty", timeout=30_000)
    page.screenshot(path=str(tmp_path / "serve.png"), full_page=True)
    assert page.external == []


def test_served_page_upload_an_image_and_edit_it(server, page, tmp_path):
    from PIL import Image

    path = tmp_path / "photo.png"  # RGBA and not the model's size: two notes
    picture = Image.new("RGBA", (48, 40), (230, 40, 40, 255))
    picture.paste(Image.new("RGBA", (20, 16), (40, 40, 230, 160)), (24, 20))
    picture.save(path)
    page.goto(server)
    page.fill("#prompt textarea", PROMPT)
    page.fill("#steps input", "4")
    page.set_input_files("#upload input[type=file]", str(path))
    page.wait_for_selector("#upload img", timeout=30_000)
    page.click("#generate")
    page.wait_for_selector("text=converted to RGB (transparency on white)", timeout=60_000)
    page.wait_for_function("document.querySelectorAll('#overlays img').length === 7", timeout=60_000)
    files = page.locator("#files").inner_text().replace("\n", "")  # names and extensions are drawn apart
    assert "upload.png" in files and "a-red-circle-left-of-a-blue-square-upload-0.denoised.png" in files
    page.wait_for_function("document.querySelector('#image img').complete")
    box = page.locator("#image img").bounding_box()
    page.locator("#image img").click(position={"x": box["width"] * 0.75, "y": box["height"] * 0.75})
    page.wait_for_function("document.querySelector('#reads').innerText.includes('square')", timeout=30_000)

    page.fill("#target textarea", "a red circle left of a red square")
    page.click("#edit")
    page.wait_for_function("document.querySelectorAll('#edits img').length === 6", timeout=60_000)  # pictures, maps
    page.wait_for_function("document.querySelector('#edit-info').innerText.includes('dB')", timeout=30_000)
    assert "reconstruction" in page.locator("#edits").inner_text()
    page.wait_for_function("document.querySelector('#edit-files').innerText.includes('reconstruction')")
    downloads = page.locator("#edit-files").inner_text().replace("\n", "")  # the files `crossattn edit` writes
    assert "a-red-circle-left-of-a-red-square-0.edited.png" in downloads and "upload.png" in downloads
    page.screenshot(path=os.environ.get("CROSSATTN_SCREENSHOT") or str(tmp_path / "serve-upload.png"), full_page=True)
    assert page.external == []


def test_maps_html_switch_word_and_step(tiny_pipe, page, tmp_path):
    with trace(tiny_pipe, per_step=True, per_head=True) as tracer:
        image = tiny_pipe(PROMPT, num_inference_steps=3, generator=generator(0)).images[0]
    maps = tracer.maps()
    path = maps.to_html(tmp_path / "x.maps.html", image)

    page.goto(path.as_uri())
    page.wait_for_function("document.body.dataset.rendered === '0,-1,-1,-1'")  # word 0, all means
    assert page.locator(".thumb").count() == len(set(maps.words)) == 7  # 'a' twice: one word, both tokens
    page.select_option("#word", label="circle")
    page.locator("#step").fill("1")  # the second sampling step
    page.select_option("#head", value="1")
    word = maps.words.index("circle")
    page.wait_for_function(f"document.body.dataset.rendered === '{word},-1,1,1'")
    assert "'circle'" in page.locator("#info").inner_text()

    drawn = page.evaluate("crossattnMap('circle', -1, 1, 1)")
    truth = maps.word_map("circle", step=1, head=1)
    assert torch.allclose(torch.tensor(drawn).view_as(truth), truth, atol=2e-3 * float(truth.max()) + 1e-6)
    drawn = page.evaluate("crossattnMap('a', -1, -1, -1)")
    truth = maps.word_map("a")
    assert torch.allclose(torch.tensor(drawn).view_as(truth), truth, atol=2e-3 * float(truth.max()) + 1e-6)
    page.select_option("#layer", index=1)  # one layer
    name = maps.cross_layers[0]
    drawn = page.evaluate("crossattnMap('circle', 0, -1, -1)")
    truth = maps.word_map("circle", layers=name)
    assert torch.allclose(torch.tensor(drawn).view_as(truth), truth, atol=2e-3 * float(truth.max()) + 1e-6)
    assert page.external == []


@pytest.fixture
def served_flux(family_dir, monkeypatch, capsys):
    """``crossattn serve --model FLUX --height 64 --width 96``; its URL (:func:`serve_in_thread`)."""
    yield from serve_in_thread(
        ["--model", str(family_dir("flux")), "--height", "64", "--width", "96"], monkeypatch, capsys
    )


def serve_in_thread(args: list[str], monkeypatch, capsys):
    """``crossattn serve ARGS`` (on a free port, one thread) as ``cli.main`` in a thread of this process (a new
    interpreter spent ~5 s importing torch, diffusers and Gradio again): the same argument parsing, size check,
    loading and printed line; yields its URL. Closing the app it built ends the command (Gradio's
    ``block_thread`` returns once the app stops running), which must exit 0."""
    from crossattn.cli import main
    from crossattn.web import app as web_app

    built = []
    build_app = web_app.build_app
    monkeypatch.setattr(web_app, "build_app", lambda explorer: built.append(build_app(explorer)) or built[-1])
    argv = ["serve", *args, "--port", str(free_port()), "--threads", "1"]
    ended = {}
    command = threading.Thread(target=lambda: ended.setdefault("code", main(argv)), daemon=True)
    command.start()
    try:
        yield _served_url(command, capsys)
    finally:
        for app in built:
            app.close()
        command.join(timeout=20)
    assert ended == {"code": 0}, "serve ends with exit code 0 once its app is closed"


def _served_url(command: threading.Thread, capsys, timeout_s: float = 120.0) -> str:
    """The URL of ``serve``'s "crossattn serve: URL (...)" line, once it is printed."""
    deadline = time.monotonic() + timeout_s
    printed = ""
    while time.monotonic() < deadline:
        captured = capsys.readouterr()
        printed += captured.out + captured.err
        found = re.search(r"crossattn serve: (http://\S+) \(", printed)
        if found:
            return found.group(1)
        assert command.is_alive(), printed
        time.sleep(0.2)
    raise AssertionError(f"serve did not start in {timeout_s:.0f} s:\n{printed}")


def test_served_flux_folder_non_square_click_near_the_right_edge(served_flux, page, tmp_path):
    generate_on(page, served_flux, 2)
    page.wait_for_function("document.querySelector('#image img').complete")
    shown = page.evaluate(
        "[document.querySelector('#image img').naturalWidth, document.querySelector('#image img').naturalHeight]"
    )
    assert shown[0] * 64 == shown[1] * 96  # the 96x64 image, scaled up as a whole

    box = page.locator("#image img").bounding_box()
    page.locator("#image img").click(position={"x": box["width"] * 0.98, "y": box["height"] * 0.5})
    page.wait_for_selector("#pixel img", timeout=30_000)
    page.wait_for_function("document.querySelector('#reads').innerText.includes('image tokens')", timeout=30_000)
    x, y = map(
        int, re.search(r"self-attention of pixel \((\d+), (\d+)\)", page.locator("#pixel").inner_text()).groups()
    )
    assert 92 <= x <= 95 and 28 <= y <= 35
    reads = page.locator("#reads").inner_text()
    assert "joint attention" in reads and "square" in reads
    page.screenshot(path=str(tmp_path / "serve-flux.png"), full_page=True)
    assert page.external == []
