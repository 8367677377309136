"""``crossattn serve --model SDXL --height 32 --width 48`` (the tiny random SDXL folder) driven in headless Chromium
(issue 41): upload a 64×48 drawing, edit it, and see the reconstruction, edited and plain pictures, the changed
word's map under each and the reconstruction's PSNR, with the upload's notes (converted, resized to the model's
16×16, not the server's 32×48) as warnings; every request stays on this machine. The page's screenshot is
docs/img/serve_sdxl_edit.png (``CROSSATTN_SCREENSHOT=path`` writes it there)."""

from __future__ import annotations

import os

import pytest

from .test_browser import CHROMIUM, browser, page, serve_in_thread  # noqa: F401 (fixtures)

pytest.importorskip("gradio")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)"),
]


@pytest.fixture
def served_sdxl(family_dir, monkeypatch, capsys):
    """``crossattn serve --model SDXL --height 32 --width 48`` in a thread (as test_browser serves Flux); its URL."""
    yield from serve_in_thread(
        ["--model", str(family_dir("sdxl")), "--height", "32", "--width", "48"], monkeypatch, capsys
    )


def test_served_sdxl_folder_upload_and_edit(served_sdxl, page, tmp_path):  # noqa: F811 (the fixture)
    from PIL import Image

    path = tmp_path / "drawing.png"  # RGBA, 64x48: converted, and resized to the model's 16x16
    picture = Image.new("RGBA", (64, 48), (235, 235, 225, 255))
    picture.paste(Image.new("RGBA", (24, 24), (220, 30, 30, 255)), (20, 12))
    picture.save(path)
    page.goto(served_sdxl)
    page.fill("#prompt textarea", "a red square")
    page.fill("#steps input", "4")
    page.set_input_files("#upload input[type=file]", str(path))
    page.wait_for_selector("#upload img", timeout=30_000)
    page.fill("#target textarea", "a blue square")
    page.click("#edit")
    page.wait_for_function("document.querySelectorAll('#edits img').length === 6", timeout=60_000)
    page.wait_for_function("document.querySelector('#edit-info').innerText.includes('dB')", timeout=30_000)
    page.wait_for_selector("text=resized to the model's 16x16", timeout=30_000)
    gallery = page.locator("#edits").inner_text()
    assert all(caption in gallery for caption in ("reconstruction", "'red' in source", "'blue' in edited"))
    assert "DDIM inversion" in page.locator("#edit-info").inner_text()
    page.wait_for_function("[...document.querySelectorAll('#edits img')].every(img => img.complete)")
    shot = os.environ.get("CROSSATTN_SCREENSHOT") or str(tmp_path / "serve_sdxl_edit.png")
    page.screenshot(path=shot, full_page=True)
    assert page.external == []
