"""Shared fixtures: a tiny model config and pipeline (channels 8/16, one layer, 16×16)."""

from __future__ import annotations

import gc

import pytest
import torch

from crossattn.config import ModelConfig


def tiny_config(**overrides) -> ModelConfig:
    """The smallest config that still has cross-attention at one level and in the mid block."""
    values = dict(
        resolution=16,
        block_out_channels=(8, 16),
        cross_attention_levels=(False, True),
        norm_num_groups=4,
        attention_head_dim=8,
        text_hidden_size=16,
        text_layers=1,
        text_heads=2,
    )
    values.update(overrides)
    return ModelConfig(**values)


def pytest_configure(config):
    """Fewer full garbage collections: the collector's third threshold 100 (Python's default 10).

    The suite's process holds some 600 000 objects the collector tracks (torch, diffusers, transformers, gradio, the
    session's pipelines), and each full collection walks all of them (~0.3 s). Loading a CLIP tokenizer (its ~49 000
    merges) promotes enough objects to start one, so nearly every test that loads a model folder paid for one:
    test_families_cli.py spent 11.8 of its 45 s of CPU in 39 full collections; 4.0 s in 12 with this threshold (peak
    memory 0.88 -> 0.93 GB). The two younger generations are collected as before: short-lived cycles still go at once.
    """
    first, second, _ = gc.get_threshold()
    gc.set_threshold(first, second, 100)


def pytest_collection_finish(session):
    """Collected: every test module and what it imports is loaded, and lives as long as the session. ``gc.freeze()``
    moves those objects (~340 000 here) out of the collector's sight, so each later full collection walks only what
    the tests made (helper B's 9 files: 9.8 -> 6.0 s of CPU in the 21 full collections). Garbage is collected first;
    ``gc.get_objects()`` no longer lists the frozen objects (no test counts objects made before the tests run)."""
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _deterministic_threads():
    """One thread: CPU results do not depend on how work is split across cores."""
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def tiny_pipe():
    from crossattn.models.loading import placeholder_pipeline

    pipe = placeholder_pipeline(tiny_config())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_pipe, tmp_path_factory):
    """The tiny pipeline saved as a diffusers folder (safetensors)."""
    path = tmp_path_factory.mktemp("model") / "tiny"
    tiny_pipe.save_pretrained(path)
    return path


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def picture(tmp_path):
    """A 16x16 RGB image with a red square on white, saved as PNG (a given image for the tiny models)."""
    from PIL import Image

    image = Image.new("RGB", (16, 16), "white")
    image.paste((220, 30, 30), (4, 4, 11, 11))
    path = tmp_path / "scene.png"
    image.save(path)
    return path


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def explorer(tiny_model_dir, tmp_path_factory):
    """The web explorer on the tiny model, one per test module (its request files in a temporary folder)."""
    from crossattn.web.session import Explorer

    ex = Explorer.load(str(tiny_model_dir), out=tmp_path_factory.mktemp("serve"))
    ex.pipe.set_progress_bar_config(disable=True)
    return ex


@pytest.fixture(scope="module")
def server(explorer):
    """The page for :func:`explorer` served on a free local port; its URL."""
    from crossattn.web.app import build_app, launch

    app = build_app(explorer)
    _, url, _ = launch(app, port=free_port(), block=False)
    yield url
    app.close()


@pytest.fixture(scope="session")
def family_dir(tmp_path_factory):
    """``family_dir(name)``: the tiny pipeline of a model family (``family_pipelines.FAMILIES``) saved as a diffusers
    folder, once per test session."""
    from .family_pipelines import save_family

    saved = {}

    def folder(name: str):
        if name not in saved:
            saved[name] = save_family(name, tmp_path_factory.mktemp(name))
        return saved[name]

    return folder
