"""A LoRA beside its base model (issue 39, part 3): the same pipeline with the adapter off gives the base
model's maps, the adapter is on again after (also when sampling raised), and every front end shows both:
``crossattn maps --lora --compare-base --html``'s page and the explorer's answer (``serve --lora``)."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from crossattn.cli import main

from .conftest import generator

pytest.importorskip("peft")
PROMPT = "a red ring"
WORDS = ["a", "red", "ring"]


@pytest.fixture(scope="module")
def lora_dir(tiny_model_dir, tmp_path_factory):
    """A tiny LoRA on the tiny model: random ``lora_B`` on the U-Net and the text encoder (so it changes the maps)
    and a new row for ``ring</w>`` (textual inversion), saved as ``crossattn finetune`` saves them."""
    from crossattn.models.loading import load_pipeline
    from crossattn.training.lora import add_lora, save_lora, save_token_rows

    pipe = load_pipeline(tiny_model_dir)
    add_lora(pipe, 2, text_encoder=True)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in [*pipe.unet.named_parameters(), *pipe.text_encoder.named_parameters()]:
            if "lora_B" in name:
                p.normal_(0, 0.5)
        ring = pipe.tokenizer.convert_tokens_to_ids("ring</w>")
        pipe.text_encoder.get_input_embeddings().weight[ring] = torch.randn(16)
    folder = tmp_path_factory.mktemp("lora")
    save_lora(pipe, folder)
    save_token_rows(pipe, folder, [ring])
    return folder


@pytest.fixture(scope="module")
def tuned(tiny_model_dir, lora_dir):
    from crossattn.sampling import ModelRef

    ref = ModelRef.resolve(tiny_model_dir, lora_dir)
    pipe = ref.load()
    pipe.set_progress_bar_config(disable=True)
    return pipe, ref


def state(pipe):
    """What the LoRA changes: which adapter layers are on, and the text encoder's embedding table."""
    from crossattn.sampling.compare import adapter_layers

    return [layer.disable_adapters for layer in adapter_layers(pipe)], pipe.text_encoder.get_input_embeddings().weight


def sample_maps(pipe):
    from crossattn.attention.trace import trace

    with trace(pipe) as tracer:
        image = pipe(PROMPT, num_inference_steps=2, generator=generator(0)).images[0]
    return image, tracer.maps()


def test_lora_off_is_the_base_model_and_comes_back_on(tuned, tiny_model_dir):
    """Inside ``lora_disabled`` the pipeline draws what a pipeline loaded without the LoRA draws (image and maps
    equal); after it, the LoRA's layers and its ``ring`` row are back, also when sampling raised."""
    from crossattn.models.loading import load_pipeline
    from crossattn.sampling.compare import lora_disabled

    pipe, _ = tuned
    offs, table = state(pipe)
    before = table.clone()
    assert offs and not any(offs)
    plain = load_pipeline(tiny_model_dir)
    plain.set_progress_bar_config(disable=True)
    base_image, base_maps = sample_maps(plain)
    with lora_disabled(pipe):
        assert all(state(pipe)[0])
        image, maps = sample_maps(pipe)
    assert np.array_equal(np.array(image), np.array(base_image))
    assert all(torch.equal(maps.tensors[k], base_maps.tensors[k]) for k in base_maps.tensors)
    assert state(pipe)[0] == offs and torch.equal(state(pipe)[1], before)
    lora_image, _ = sample_maps(pipe)
    assert not np.array_equal(np.array(lora_image), np.array(base_image))  # the LoRA draws again
    with pytest.raises(RuntimeError, match="boom"), lora_disabled(pipe):
        raise RuntimeError("boom")
    assert state(pipe)[0] == offs and torch.equal(state(pipe)[1], before)


def test_new_words_rows_alone_are_put_back_too(tiny_model_dir, lora_dir):
    """A LoRA of new words' rows alone (textual inversion: no adapter layer) is compared with its base too:
    inside, ``ring``'s row is the base's; after, the learned one again."""
    from crossattn.models.loading import load_pipeline
    from crossattn.models.lora_files import load_token_rows
    from crossattn.sampling.compare import lora_disabled

    pipe = load_pipeline(tiny_model_dir)
    table = pipe.text_encoder.get_input_embeddings().weight
    base = table.detach().clone()
    load_token_rows(pipe, lora_dir / "learned_embeds.safetensors")
    learned = table.detach().clone()
    assert not torch.equal(learned, base)
    with lora_disabled(pipe):
        assert torch.equal(table, base)
    assert torch.equal(table, learned)


def test_no_lora_to_disable(tiny_pipe):
    from crossattn.errors import BadArgument
    from crossattn.sampling.compare import lora_disabled

    with pytest.raises(BadArgument, match="no LoRA loaded"), lora_disabled(tiny_pipe):
        pass


def page_data(path) -> dict:
    text = path.read_text(encoding="utf-8")
    return json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', text, re.S).group(1))


def test_maps_compare_base_html_holds_both_sets_and_the_numbers(tiny_model_dir, lora_dir, tmp_path):
    """``maps --lora --compare-base --html``: the page carries the base model's maps beside the LoRA's (same
    seed) and the numbers of ``.compare.json``; the base files equal a base-model run's."""
    out = tmp_path / "out"
    argv = ["maps", PROMPT, "--model", str(tiny_model_dir), "--lora", str(lora_dir), "--compare-base", "--html"]
    assert main([*argv, "--steps", "2", "--out", str(out), "--quiet"]) == 0
    data = page_data(out / "a-red-ring-0.maps.html")
    numbers = json.loads((out / "a-red-ring-0.compare.json").read_text())["words"]
    assert data["numbers"] == numbers and set(numbers) == set(WORDS) and numbers["ring"]["moved"] > 0
    base = data["base"]
    assert [w for w, _ in base["words"]] == [w for w, _ in data["words"]] == WORDS
    assert base["codes"] != data["codes"] and base["image"].startswith("data:image/png")
    assert base["per_head"] and len(base["layers"]) == len(data["layers"])
    assert json.loads((out / "a-red-ring-0.base.json").read_text())["model"]["hash"] == data_model_hash(out)


def data_model_hash(out) -> str:
    """The LoRA image's sidecar's base-model hash (the base image's sidecar names that model, with no LoRA)."""
    model = json.loads((out / "a-red-ring-0.json").read_text())["model"]
    assert "lora" in model
    return model["hash"]


@pytest.fixture(scope="module")
def lora_explorer(tiny_model_dir, lora_dir, tmp_path_factory):
    """``crossattn serve --lora``'s explorer on the tiny model and LoRA."""
    from crossattn.web.session import Explorer

    ex = Explorer.load(str(tiny_model_dir), lora=str(lora_dir), out=tmp_path_factory.mktemp("serve"))
    ex.pipe.set_progress_bar_config(disable=True)
    return ex


def test_explorer_comparison_that_raises_leaves_the_lora_on(lora_explorer, monkeypatch):
    from crossattn.web.session import Request

    offs, table = state(lora_explorer.pipe)
    before = table.clone()

    def broken(*args, **kwargs):
        assert all(state(lora_explorer.pipe)[0])  # the base model is sampling: every adapter off
        raise RuntimeError("out of memory")

    monkeypatch.setattr(importlib.import_module("crossattn.sampling.run"), "sample", broken)  # the base's sampling
    with pytest.raises(RuntimeError, match="out of memory"):
        lora_explorer.run(Request.of(PROMPT, steps=2, compare_base=True))
    assert state(lora_explorer.pipe)[0] == offs and torch.equal(state(lora_explorer.pipe)[1], before)


def test_comparison_needs_a_lora_and_a_generated_image(tiny_model_dir, tiny_pipe):
    from PIL import Image

    from crossattn.errors import BadArgument
    from crossattn.sampling import ModelRef
    from crossattn.sampling.compare import compare_with_base
    from crossattn.web.session import Request

    with pytest.raises(BadArgument, match="needs a LoRA"):
        compare_with_base(tiny_pipe, None, None, ModelRef(tiny_model_dir, "x"), None, [])
    request = Request.of(PROMPT, image=Image.new("RGB", (16, 16)), compare_base=True)
    with pytest.raises(ValueError, match="remove the uploaded image"):
        request.check(tiny_pipe.tokenizer, 77)


def test_the_served_page_answers_base_and_tuned_side_by_side(lora_explorer):
    """The "compare with the base model" box, through the page's own wiring (gradio_client on ``/generate``:
    ``compare_base`` is its last parameter, the comparison its last two outputs): base row over LoRA row and the
    numbers; the request folder holds the page with both sets and ``maps --compare-base``'s files;
    the LoRA is on after."""
    from gradio_client import Client
    from PIL import Image

    from crossattn.web.app import build_app, launch

    from .conftest import free_port

    offs, table = state(lora_explorer.pipe)
    before = table.clone()
    app = build_app(lora_explorer)
    box = next(b for b in app.blocks.values() if getattr(b, "elem_id", None) == "compare-base")
    assert box.visible
    _, url, _ = launch(app, port=free_port(), block=False)
    try:
        out = Client(url, verbose=False).predict(prompt=PROMPT, steps=2, compare_base=True, api_name="/generate")
    finally:
        app.close()
    with Image.open(out[-2]) as grid:  # image + each word, 4x the tiny model's 16 px + 4 px gap; two header lines
        assert grid.size == (110 + (1 + len(WORDS)) * 68, 37 + 2 * 68)
    assert "| ring |" in out[-1]
    names = {Path(p).name for p in out[7]}
    assert {"a-red-ring-0-0.base.png", "a-red-ring-0-0.compare.json", "a-red-ring-0-0.compare.png"} <= names
    html = next(Path(p) for p in out[7] if p.endswith(".maps.html"))
    numbers = json.loads(Path(next(p for p in out[7] if p.endswith(".compare.json"))).read_text())["words"]
    data = page_data(html)
    assert data["numbers"] == numbers and set(numbers) == set(WORDS) and data["base"]["per_step"]
    assert state(lora_explorer.pipe)[0] == offs and torch.equal(state(lora_explorer.pipe)[1], before)
