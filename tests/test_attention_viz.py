"""Pictures: the overlay row, the layer × word grid and the timestep GIF are written and sized right."""

from __future__ import annotations

import pytest
from PIL import Image

import crossattn
from crossattn import viz

from .attention_helpers import PROMPT, generator


@pytest.fixture(scope="module")
def traced(tiny_pipe):
    pipe = tiny_pipe
    with crossattn.trace(pipe, per_step=True) as tracer:
        images = pipe(PROMPT, num_inference_steps=3, generator=generator()).images
    return tracer.maps(), images


def test_word_row_and_grid_have_one_panel_per_word(traced, tmp_path):
    maps, images = traced
    fig = viz.word_row(maps, images, words=["red", "circle"])
    assert len([ax for ax in fig.axes if ax.images]) == 3  # image + 2 words
    path = viz.save_figure(fig, tmp_path / "row.png")
    assert Image.open(path).size[0] > 0
    fig = viz.layer_word_grid(maps, ["circle", "square"], images[0])
    assert len(fig.axes) == len(maps.cross_layers) * 2
    viz.save_figure(fig, tmp_path / "grid.png")


def test_timestep_gif_has_one_frame_per_step(traced, tmp_path):
    maps, images = traced
    path = viz.timestep_gif(maps, "circle", tmp_path / "circle.gif", images[0])
    gif = Image.open(path)
    assert gif.n_frames == 3 and gif.size == (16 * 8, 16 * 8)


def test_draw_word_row_refuses_too_few_axes(traced):
    maps, images = traced
    fig = viz.word_row(maps, images, words=["red"])
    with pytest.raises(ValueError, match="2 words but only 1 axes"):
        viz.draw_word_row(fig.axes[1:2], maps, None, ["red", "blue"])
