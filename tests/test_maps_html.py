"""The self-contained ``.maps.html``: its data decode to the recorded maps, nothing is fetched,
``AttentionMaps.to_html`` and ``crossattn maps --html`` write it. (The page driven in a browser:
tests/test_browser.py.)"""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest
import torch

from crossattn.attention.html import maps_html, maps_payload
from crossattn.attention.trace import trace
from crossattn.cli import main

from .conftest import generator

PROMPT = "a red circle left of a blue square"


@pytest.fixture(scope="module")
def recorded(tiny_pipe):
    with trace(tiny_pipe, per_step=True, per_head=True) as tracer:
        image = tiny_pipe(PROMPT, num_inference_steps=3, generator=generator(0)).images[0]
    return tracer.maps(), image


def decode(payload) -> dict[str, np.ndarray]:
    """The page's arrays back as ``(S, heads, K, N)`` float maps per layer (as its script reads them)."""
    codes = np.frombuffer(base64.b64decode(payload["codes"]), dtype=np.uint8)
    scales = np.frombuffer(base64.b64decode(payload["scales"]), dtype="<f4")
    out = {}
    for layer in payload["layers"]:
        shape = (layer["steps"], layer["heads"], layer["keys"], layer["height"] * layer["width"])
        q = codes[layer["offset"] : layer["offset"] + int(np.prod(shape))].reshape(shape)
        s = scales[layer["scale_offset"] : layer["scale_offset"] + int(np.prod(shape[:-1]))].reshape(shape[:-1])
        out[layer["name"]] = q * (s[..., None] / 255.0)
    return out


def test_payload_decodes_to_the_recorded_maps(recorded):
    maps, image = recorded
    payload = maps_payload(maps, image)
    assert [w for w, _ in payload["words"]] == list(dict.fromkeys(maps.words))
    assert payload["steps"] == 3 and payload["per_step"] and payload["per_head"]
    decoded = decode(payload)
    assert list(decoded) == maps.cross_layers
    for name, values in decoded.items():
        truth = maps.tensors[name][:, 0].permute(0, 1, 3, 2).numpy()  # (S, heads, K, N)
        top = truth.max(axis=-1, keepdims=True)
        assert np.all(np.abs(values - truth) <= top / 510 + 1e-7)  # uint8 per map: half a level of its max


def test_page_is_self_contained(recorded, tmp_path):
    maps, image = recorded
    path = maps.to_html(tmp_path / "x.maps.html", image)
    text = path.read_text(encoding="utf-8")
    assert "default-src 'none'" in text  # the browser itself refuses any fetch
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", text)
    assert "data:image/png;base64," in text
    assert "<script src" not in text and "<link" not in text
    assert text.count("</script>") == 2  # the JSON cannot close its script tag early


def test_page_without_image_or_per_step(tiny_pipe):
    with trace(tiny_pipe) as tracer:
        tiny_pipe("a blue square", num_inference_steps=2, generator=generator(1))
    payload = maps_payload(tracer.maps())
    assert payload["image"] is None and not payload["per_step"] and payload["layers"][0]["steps"] == 1
    assert "a blue square" in maps_html(tracer.maps())


def test_page_needs_words(tiny_pipe):
    with trace(tiny_pipe) as tracer, pytest.warns(UserWarning, match="empty prompt"):
        tiny_pipe("", num_inference_steps=1, generator=generator(0))
    with pytest.raises(ValueError, match="no words"):
        maps_html(tracer.maps())


def test_maps_command_html(tiny_model_dir, tmp_path, capsys):
    args = ["maps", "a red circle", "--model", str(tiny_model_dir), "--steps", "2", "--out", str(tmp_path), "--quiet"]
    assert main([*args, "--html", "--per-step"]) == 0
    page = tmp_path / "a-red-circle-0.maps.html"
    assert str(page) in capsys.readouterr().out
    payload = re.search(r'id="data">(.*?)</script>', page.read_text(encoding="utf-8")).group(1)
    assert '"per_head":true' in payload and '"per_step":true' in payload
    assert main([*args, "--html"]) == 2  # refuses to overwrite, the page included
    assert "a-red-circle-0.maps.html" in capsys.readouterr().err


def test_default_model_page_size(tmp_path):
    """20 steps, per step and per head, default model shape: well under 5 MB (no model weights needed)."""
    from crossattn.attention.maps import AttentionMaps

    rng = torch.Generator().manual_seed(0)
    layers, tensors = {}, {}
    for i, side in enumerate((16, 8, 8, 8, 8, 16, 16)):
        name = f"block{i}.attn2"
        tensors[name] = torch.rand(20, 1, 4, side * side, 16, generator=rng).softmax(-1)
        layers[name] = {"kind": "cross", "resolution": side, "height": side, "width": side, "heads": 4}
    tokens = ["<|startoftext|>", *[w + "</w>" for w in PROMPT.split()], "<|endoftext|>"]
    meta = {"images": [{"prompt": PROMPT, "tokens": tokens, "half": "cond"}], "layers": layers, "image_size": [32, 32]}
    meta.update(steps=20, per_step=True, per_head=True, guidance_half="cond", guided=True)
    size = AttentionMaps(tensors, meta).to_html(tmp_path / "big.maps.html").stat().st_size
    assert size < 5_000_000
