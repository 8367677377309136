"""A LoRA beside its base model: the same pipeline, the same seed, once with the adapter and once without.

``crossattn maps PROMPT --lora DIR --compare-base``, the explorer's "compare with the base model" box
(``crossattn serve --lora DIR``) and the ``.maps.html`` view they write all go through
:func:`compare_with_base` and :func:`write_comparison`: one job, many front ends.

The base model is not a second loaded model. :func:`lora_disabled` switches peft's adapter layers off
(``BaseTunerLayer.enable_adapters(False)``, what diffusers' ``pipe.disable_lora()`` does on each component)
and puts back the base model's embedding rows of the new words the LoRA folder wrote (textual inversion,
:func:`~crossattn.models.lora_files.base_rows`); on exit, also after an exception, each layer and row is
as it was. A peft LoRA layer with its adapters off returns its base layer's output, so the base image and
maps are the ones a pipeline loaded without the LoRA draws (``tests/test_compare_base.py`` checks them equal).

Per word, two numbers (:func:`crossattn.attention.movement.word_numbers`, the ones fine-tuning's
validation logs): how far its map moved from the base model's (Jensen–Shannon divergence, bits) and how
concentrated it is (its mass in the top 10 % of pixels), tuned and base.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadArgument
from .model_ref import ModelRef
from .outputs import ImageJob, maps_paths
from .request import SamplingRequest


def adapter_layers(pipe) -> list:
    """Every peft adapter layer (``BaseTunerLayer``) of the pipeline's components (denoiser, text encoders)."""
    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer

    modules = [c for c in pipe.components.values() if isinstance(c, torch.nn.Module)]
    return [m for module in modules for m in module.modules() if isinstance(m, BaseTunerLayer)]


def _text_encoders(pipe) -> list:
    return [c for name, c in pipe.components.items() if name.startswith("text_encoder") and c is not None]


@contextmanager
def lora_disabled(pipe) -> Iterator[None]:
    """Inside, ``pipe`` is its base model: every adapter layer off and the new words' rows the base's; on exit
    each layer is on or off as it was, with its parameters' ``requires_grad``, and each row the LoRA's again."""
    import torch

    from ..models.lora_files import base_rows

    layers = adapter_layers(pipe)
    rows = [(e.get_input_embeddings().weight, base_rows(e)) for e in _text_encoders(pipe)]
    if not layers and not any(base for _, base in rows):  # a LoRA of new words' rows alone is a LoRA too
        raise BadArgument(f"{type(pipe).__name__} has no LoRA loaded; the base model is compared with a LoRA (--lora)")
    was_off = [layer.disable_adapters for layer in layers]
    grads = {p: p.requires_grad for layer in layers for p in layer.parameters()}
    tuned = [{i: table[i].clone() for i in base} for table, base in rows]  # the LoRA's rows, to put back
    try:
        for layer in layers:
            layer.enable_adapters(False)
        with torch.no_grad():
            for table, base in rows:
                for index, row in base.items():
                    table[index] = row.to(table.device, table.dtype)
        yield
    finally:
        with torch.no_grad():
            for (table, _), mine in zip(rows, tuned, strict=True):
                for index, row in mine.items():
                    table[index] = row
        for layer, off in zip(layers, was_off, strict=True):
            layer.enable_adapters(not off)
        for p, flag in grads.items():
            p.requires_grad_(flag)


@dataclass
class BaseComparison:
    """The base model's image and maps for one tuned image (same prompt, seed, settings), and each word's
    numbers: ``{word: {"moved", "concentration", "base_concentration"}}``."""

    model: ModelRef  # the base model: the tuned one without its LoRA (its sidecars' ``model``)
    image: object  # PIL
    maps: object  # AttentionMaps as the request recorded them (per step / head when asked)
    numbers: dict[str, dict[str, float]]


def html_arguments(found: BaseComparison | None) -> dict:
    """:func:`~crossattn.attention.html.write_html`'s keyword arguments that draw ``found``'s base maps beside the
    page's own with each word's numbers; none without a comparison."""
    return {"base": (found.maps, found.image), "numbers": found.numbers} if found is not None else {}


def compare_with_base(pipe, job: ImageJob, request: SamplingRequest, model: ModelRef, tuned_maps, words):
    """Sample ``job`` again with ``pipe``'s LoRA off (:func:`lora_disabled`), traced as ``request`` asks, and
    compare each word of ``words`` with ``tuned_maps`` (the maps of the same job with the LoRA)."""
    from ..attention.movement import word_numbers
    from .run import sample

    if model.lora is None:
        raise BadArgument("comparing with the base model needs a LoRA (--lora DIR): it draws the base beside it")
    with lora_disabled(pipe):
        images, maps = sample(pipe, [job], request)
    base = dataclasses.replace(model, lora=None, lora_hash=None)
    return BaseComparison(base, images[0], maps, word_numbers(maps, tuned_maps, list(words)))


def compare_paths(png: Path) -> dict[str, Path]:
    """The comparison's files beside the tuned ``x.png``: ``x.base.png`` and its sidecar and maps,
    ``x.compare.png`` (base row over tuned row) and ``x.compare.json`` (the numbers)."""
    base = png.with_suffix(".base.png")
    paths = {"base_png": base, "base_sidecar": base.with_suffix(".json"), "compare": png.with_suffix(".compare.png")}
    paths.update(zip(("base_maps", "base_maps_json", "base_row"), maps_paths(base), strict=True))
    paths["compare_json"] = png.with_suffix(".compare.json")
    return paths


def write_comparison(pipe, job: ImageJob, request: SamplingRequest, model: ModelRef, tuned, found, words):
    """Write ``found`` (a :class:`BaseComparison` of ``job``; ``tuned``: the LoRA's ``(image, maps)``): the base
    image, sidecar and maps, the side-by-side figure and the numbers, at :func:`compare_paths`; returns the paths."""
    from .. import viz
    from ..files import atomic_write_json
    from .outputs import write_image, write_maps
    from .run import image_sidecar

    paths = compare_paths(job.png)
    base_job = dataclasses.replace(job, png=paths["base_png"], sidecar=paths["base_sidecar"], upscaled=None)
    meta = image_sidecar(pipe, base_job, request, found.model, found.image.size)
    written = write_image(base_job, found.image, meta) + write_maps(found.maps, found.image, base_job.png, meta, words)
    figure = compare_figure(found.maps, found.image, tuned[1], tuned[0], list(words), found.numbers)
    written.append(viz.save_figure(figure, paths["compare"]))
    record = {"prompt": job.prompt, "seed": job.seed, "base": found.model.identity(), "tuned": model.identity()}
    written.append(atomic_write_json(paths["compare_json"], {**record, "words": found.numbers}))
    return written


def compare_figure(base, base_image, tuned, tuned_image, words: list[str], numbers: dict | None = None):
    """Two rows, the base model's image and word overlays over the tuned model's (same seed); the tuned
    panels' titles carry ``numbers`` (moved, concentration) where given."""
    from .. import viz

    fig, axes = viz.figure(2, len(words) + 1)
    viz.draw_word_row(axes[0], base, base_image, words)
    viz.draw_word_row(axes[1], tuned, tuned_image, words)
    axes[0][0].set_title("base", fontsize=8)
    axes[1][0].set_title("tuned", fontsize=8)
    for ax, word in zip(axes[1][1:], words, strict=True):
        if numbers and word in numbers:
            n = numbers[word]
            ax.set_title(f"{word}\nmoved {n['moved']:.2f} top10 {n['concentration']:.2f}", fontsize=8)
    fig.tight_layout()
    return fig
