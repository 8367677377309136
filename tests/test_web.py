"""``crossattn serve``'s pieces on the tiny model: input checks, one traced request writing exactly
``crossattn generate --maps``'s files, request isolation, the pictures, and the Gradio ``/generate``
endpoint through ``gradio_client`` (bad input is an error message, the server keeps serving)."""

from __future__ import annotations

import pytest
import torch

from crossattn.cli import main

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")

PROMPT = "a red circle left of a blue square"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prompt": "   "}, "prompt is empty"),
        ({"prompt": "a red circle " * 10}, "too long"),
        ({"prompt": "x" * 1001}, "at most 1000"),
        ({"steps": 0}, "steps 0"),
        ({"steps": 2.5}, "steps 2.5"),
        ({"seed": -1}, "seed -1"),
        ({"scheduler": "plms"}, "unknown scheduler 'plms'"),
        ({"guidance": float("nan")}, "guidance nan"),
        ({"relation_guidance": -1}, "relation guidance -1"),
        ({"guidance": -1}, r"guidance -1 is not accepted; give a finite number >= 0 and <= 100"),  # as the CLI's
        ({"steps": 201}, r"steps 201 is not accepted; give a whole number from 1 to 200"),  # the server's limit
    ],
)
def test_bad_requests_name_the_value(explorer, change, message):
    from crossattn.web.session import Request

    # the settings when made (SamplingConfig's checks and the server's step limit), the rest on check
    with pytest.raises(ValueError, match=message):
        Request.of(**{"prompt": PROMPT, **change}).check(explorer.pipe.tokenizer, explorer.max_length)


def test_request_files_are_generate_maps_files_byte_for_byte(explorer, tiny_model_dir, tmp_path):
    from crossattn.web.session import Request

    result = explorer.run(Request.of(PROMPT, negative_prompt="green", seed=5, steps=3, scheduler="ddim"))
    args = ["generate", PROMPT, "--model", str(tiny_model_dir), "--seed", "5", "--steps", "3", "--scheduler", "ddim"]
    assert main([*args, "--negative", "green", "--maps", "--quiet", "--out", str(tmp_path)]) == 0
    names = [p.name for p in result.files]
    stem = "a-red-circle-left-of-a-blue-square-5-0"
    suffixes = (".png", ".json", ".maps.safetensors", ".maps.json", ".maps.png", ".maps.html")
    assert names == [stem + s for s in suffixes]
    for path in result.files[:-1]:  # the .maps.html is the page's extra
        assert path.read_bytes() == (tmp_path / path.name).read_bytes(), path.name
    assert result.words == ["a", "red", "circle", "left", "of", "a", "blue", "square"]
    assert result.cross.meta["per_step"] and result.cross.meta["per_head"] and not result.cross.self_layers
    assert result.self_mean.self_layers and not result.self_mean.meta["per_step"]


def test_default_scheduler_matches_generate_without_scheduler(explorer, tiny_model_dir, tmp_path):
    from crossattn.web.session import Request

    result = explorer.run(Request.of("a blue square", seed=1, steps=2))
    args = ["generate", "a blue square", "--model", str(tiny_model_dir), "--seed", "1", "--steps", "2", "--quiet"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    assert result.files[0].read_bytes() == (tmp_path / result.files[0].name).read_bytes()


def test_aggregate_equals_a_plain_trace(explorer):
    from crossattn.attention.trace import trace
    from crossattn.web.session import aggregate

    pipe = explorer.request_pipe("ddim")
    runs = []
    for kwargs in ({}, {"kind": "both", "per_step": True, "per_head": True}):
        with trace(pipe, **kwargs) as tracer:
            pipe([PROMPT], num_inference_steps=3, generator=[torch.Generator().manual_seed(0)])
        runs.append(tracer.maps())
    plain, detailed = runs
    mean = aggregate(detailed, "cross")
    assert mean.meta == plain.meta
    for name, tensor in plain.tensors.items():
        assert torch.equal(mean.tensors[name], tensor)


def test_requests_do_not_share_maps_or_scheduler_state(explorer):
    from crossattn.web.session import Request

    first = explorer.run(Request.of("a red circle", steps=2, scheduler="euler"))
    before = {name: t.clone() for name, t in first.cross.tensors.items()}
    second = explorer.run(Request.of("a blue square above a green triangle", steps=3))
    assert first.words == ["a", "red", "circle"] and second.words[-1] == "triangle"
    assert first.cross.num_steps == 2 and second.cross.num_steps == 3
    assert all(torch.equal(before[n], first.cross.tensors[n]) for n in before)
    assert explorer.pipe.scheduler is explorer.scheduler  # the loaded pipeline is never changed


def test_pictures_and_pixel_rows(explorer):
    from crossattn.web import render
    from crossattn.web.session import Request

    result = explorer.run(Request.of(PROMPT, steps=2))
    side = result.image.width
    assert render.upscaled(result.image).size == (side * render.SCALE,) * 2
    captions = [c for _, c in render.word_overlays(result.cross, result.image)]
    assert [c.split(" ")[0] for c in captions] == ["a", "red", "circle", "left", "of", "blue", "square"]
    assert len(render.step_overlays(result.cross, result.image, 2)) == 7
    with pytest.raises(ValueError, match="step 3 is out of range"):
        render.step_overlays(result.cross, result.image, 3)
    layer = result.cross.layer_names[0]
    heads = result.cross.meta["layers"][layer]["heads"]
    assert len(render.head_overlays(result.cross, result.image, layer)) == heads * 7
    assert render.to_pixel([17, 9], result.image) == (2, 1)
    with pytest.raises(ValueError, match="outside"):
        render.to_pixel([side * render.SCALE, 0], result.image)
    row = render.pixel_words(result.cross, 2, 1)
    assert sum(row.values()) == pytest.approx(1.0, abs=1e-4) and "circle" in row
    assert render.pixel_panel(result.self_mean, result.image, 2, 1).size == (side * render.SCALE,) * 2
    assert render.layer_grid(result.cross, result.image).width > 0


def test_generate_endpoint_through_gradio_client(server, explorer):
    from gradio_client import Client
    from gradio_client.exceptions import AppError
    from PIL import Image

    client = Client(server, verbose=False)
    out = client.predict(prompt="a red circle", seed=2, steps=2, api_name="/generate")
    assert Image.open(out[0]).size == (explorer.pipe.unet.config.sample_size * 8,) * 2
    assert [item["caption"].split(" ")[0] for item in out[1]] == ["a", "red", "circle"]
    assert [p.rsplit("/", 1)[-1] for p in out[7]][:3] == ["a-red-circle-2-0.png", "a-red-circle-2-0.json"] + [
        "a-red-circle-2-0.maps.safetensors"
    ]
    for bad, message in (({"prompt": ""}, "prompt is empty"), ({"prompt": "a", "steps": 0}, "steps 0")):
        with pytest.raises(AppError, match=message):
            client.predict(**bad, api_name="/generate")
    again = client.predict(prompt="a blue square", steps=1, api_name="/generate")  # still serving
    assert again[1][-1]["caption"].startswith("square")


def test_server_binds_localhost(server):
    """(That ``--help`` does not import Gradio is checked in the same fresh process as torch and diffusers:
    test_cli.test_help_is_fast_and_imports_no_torch.)"""
    assert server.startswith("http://127.0.0.1:")
