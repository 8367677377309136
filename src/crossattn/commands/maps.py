"""``crossattn maps``: one prompt → the image and its attention maps in every view.

Writes, for ``DIR/<slug>-<seed>``: ``.png`` + ``.json`` (the image and its sidecar),
``.maps.safetensors`` + ``.maps.json`` (the maps), ``.maps.png`` (word overlays), ``.grid.png``
(layer × word), with ``--per-step --gif`` one ``.<word>.gif`` per word, and with
``--self-attn-pixel X Y`` ``.self-X-Y.png``, with ``--html`` the ``.maps.html`` page. Every path
is checked before sampling, so a refusal to overwrite loses no work.

With ``--image FILE`` (:func:`crossattn.maps_of_image`) the stem is ``DIR/<slug>-<image name>-<seed>``:
``.png`` is the given image as the model read it (RGB, the model's size), which every view is drawn on,
and ``.denoised.png`` what the model made of it; the sidecar's ``given_image`` says how it was read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import BadArgument
from ..sampling import SamplingRequest, maps_paths
from .flags import (
    add_device_flags,
    add_lora_flag,
    add_model_flag,
    add_negative_flag,
    add_out_flag,
    add_overwrite_flag,
    add_relation_guidance_flag,
    add_sampler_flags,
    add_seed_flag,
    add_size_flags,
    non_negative_int,
    positive_int,
)


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "maps",
        help="generate one image (or read one: --image) and draw its attention maps",
        description="Generate one image, or read a given one (--image), and write its cross-attention maps: "
        "per-word overlays, a layer x word grid, optionally a per-step GIF and a self-attention map.",
    )
    p.add_argument("prompt", help="the prompt (quote it)")
    add_view_flags(p)
    add_model_flag(
        p, "any local diffusers text-to-image folder with a UNet2DConditionModel (or a run folder: its final/)"
    )
    add_lora_flag(p)
    p.add_argument(
        "--compare-base",
        action="store_true",
        help="with --lora: also draw the base model (the same pipeline with the LoRA off), same seed, as "
        "<name>.base.png + .base.maps.*, and <name>.compare.png (base row over tuned row) with, per word, how far "
        "its map moved from the base's (Jensen-Shannon, bits) and how concentrated it is (mass in its top 10%% "
        "pixels) in <name>.compare.json; with --html the page shows both maps side by side with those numbers",
    )
    add_given_image_flags(p)
    add_relation_guidance_flag(p)
    add_seed_flag(p)
    add_sampler_flags(p)
    add_negative_flag(p)
    add_out_flag(p)
    add_overwrite_flag(p)
    add_size_flags(p)
    add_device_flags(p)
    return p


def add_view_flags(p) -> None:
    """Which maps are recorded and how they are drawn: words, layers, steps, the GIF, the page, a pixel."""
    p.add_argument("--words", nargs="+", metavar="W", help="words to draw (default: every word of the prompt)")
    p.add_argument(
        "--layers",
        nargs="+",
        metavar="PAT",
        help="layers to record: a resolution (e.g. 16), a glob or a regex on layer names (default: all)",
    )
    p.add_argument("--per-step", action="store_true", help="keep one map per sampling step (memory grows with steps)")
    p.add_argument("--gif", action="store_true", help="with --per-step: a GIF per word of its map over the steps")
    p.add_argument(
        "--html",
        action="store_true",
        help="also write <name>.maps.html: one self-contained page with word, layer, head and step selectors "
        "(records per-head maps; add --per-step for the step selector)",
    )
    p.add_argument(
        "--self-attn-pixel",
        nargs=2,
        type=non_negative_int,
        metavar=("X", "Y"),
        help="also record self-attention and draw the map of image pixel (X, Y)",
    )


def add_given_image_flags(p) -> None:
    """``--image FILE [--strength S] [--samples N]``: the maps of an image the model did not draw."""
    p.add_argument(
        "--image",
        metavar="FILE",
        help="draw the maps of this image instead of a generated one: it is converted to RGB, resized to the "
        "model's size, noised (--strength) and denoised under the tracer; overlays are drawn on it and the "
        "denoised output is written as <name>.denoised.png (relation guidance is off)",
    )
    p.add_argument(
        "--strength",
        type=float,
        metavar="S",
        help="with --image: how far it is noised, in (0, 1]; the last S share of the steps run (default: 0.5)",
    )
    p.add_argument(
        "--samples",
        type=positive_int,
        metavar="N",
        help="with --image: instead of denoising, average the maps of N noise draws at the one timestep "
        "--strength names (one U-Net pass each)",
    )


def parse_layers(patterns: list[str] | None) -> list[str | int] | None:
    """``--layers`` values: whole numbers are resolutions, anything else a name pattern."""
    if not patterns:
        return None
    return [int(p) if p.isdigit() else p for p in patterns]


def check_words(pipe, prompt: str, words: list[str] | None) -> list[str]:
    """The words to draw (default: all of the prompt's); unknown words fail before sampling."""
    from ..attention.text_layout import prompt_words

    known = prompt_words(pipe, prompt)
    if not words:
        return list(dict.fromkeys(known))
    unknown = [w for w in words if w.lower() not in known]
    if unknown:
        raise BadArgument(f"word {unknown[0]!r} is not in the prompt; words are: {', '.join(known)}")
    return [w.lower() for w in words]


def check_pixel(pipe, pixel, request: SamplingRequest) -> None:
    """``--self-attn-pixel X Y`` must lie inside the image the request makes (its size, or the model's own)."""
    from ..sampling.sizes import check_size

    if pixel is None:
        return
    height, width = check_size(pipe, request.height, request.width)
    x, y = pixel
    if x >= width or y >= height:
        raise BadArgument(
            f"pixel ({x}, {y}) is outside the {width}x{height} image; X goes from 0 to {width - 1}, Y from 0 to {height - 1}"
        )


def plan(request: SamplingRequest) -> dict[str, Path]:
    """Every output path, by role."""
    from ..files import slugify

    (prompt,) = request.prompts
    name = slugify(prompt) + (f"-{slugify(request.image.stem)}" if request.image is not None else "")
    stem = request.out / f"{name}-{request.seed}"
    paths = {"png": stem.with_suffix(".png"), "sidecar": stem.with_suffix(".json")}
    if request.image is not None:
        paths["denoised"] = stem.with_suffix(".denoised.png")
    paths.update(zip(("maps", "maps_json", "row"), maps_paths(paths["png"]), strict=True))
    paths["grid"] = stem.with_suffix(".grid.png")
    if request.maps.self_attn_pixel:
        x, y = request.maps.self_attn_pixel
        paths["self"] = stem.with_suffix(f".self-{x}-{y}.png")
    if request.maps.html:
        paths["html"] = stem.with_suffix(".maps.html")
    return paths


def check_compare(args: argparse.Namespace) -> None:
    """``--compare-base`` compares a LoRA with its base model, on generated images."""
    if args.compare_base and not args.lora:
        raise BadArgument("--compare-base needs --lora DIR: it draws the base model beside the LoRA's")
    if args.compare_base and args.image:
        raise BadArgument(f"--compare-base draws generated images; it does not take --image {args.image}")


def run(args: argparse.Namespace) -> int:
    from ..files import refuse_overwrite, slugify
    from ..sampling import ImageJob, MapsOptions, load, sample
    from ..sampling.compare import compare_paths, compare_with_base, write_comparison
    from ..sampling.given_image import read_image
    from .shared import model_from_args, request_from_args, set_threads

    check_compare(args)
    options = MapsOptions.from_flags(vars(args), layers=parse_layers(args.layers))
    request = request_from_args(args, [args.prompt], maps=options)
    model = model_from_args(args)
    paths = plan(request)
    if request.image is not None:
        read_image(request.image)  # an unreadable file fails before the model loads
    set_threads(args.threads)
    pipe = load(request, model, quiet=args.quiet)
    words = check_words(pipe, args.prompt, args.words)
    check_pixel(pipe, options.self_attn_pixel, request)
    if options.gif:
        for word in words:
            paths[f"gif:{word}"] = paths["png"].with_suffix(f".{slugify(word)}.gif")
    compare = compare_paths(paths["png"]) if args.compare_base else {}
    refuse_overwrite(list(paths.values()) + list(compare.values()), request.overwrite)
    job = ImageJob(args.prompt, 0, request.seed, paths["png"], paths["sidecar"], None)
    if request.image is None:
        images, maps = sample(pipe, [job], request)
        found = compare_with_base(pipe, job, request, model, maps, words) if compare else None
        written = write_views(pipe, job, request, model, paths, images[0], maps, words, base=found)
        if found is not None:
            written += write_comparison(pipe, job, request, model, (images[0], maps), found, words)
    else:
        written = write_given(pipe, job, request, model, paths, words)
    for path in written:
        print(path, flush=True)
    return 0


def write_given(pipe, job, request: SamplingRequest, model, paths: dict[str, Path], words) -> list[Path]:
    """The maps of ``request.image``: every view drawn on it, plus the denoised output."""
    from ..files import atomic_write
    from ..sampling.given_image import given_fields, sample_given

    result = sample_given(pipe, job.prompt, job.seed, request)
    extra = given_fields(request, result, paths["denoised"])
    written = write_views(pipe, job, request, model, paths, result.image, result.maps, words, extra)
    written.append(atomic_write(paths["denoised"], lambda tmp: result.denoised.save(tmp, format="PNG")))
    return written


def write_views(
    pipe, job, request: SamplingRequest, model, paths: dict[str, Path], image, maps, words, extra=None, base=None
) -> list[Path]:
    """Write the image + sidecar (with ``extra`` fields), the maps, the overlay row, the grid, the GIFs, the
    self-attention map and the page (with ``base``, a :class:`~crossattn.sampling.compare.BaseComparison`, the
    base model's maps beside these and each word's numbers)."""
    from .. import viz
    from ..attention.html import write_html
    from ..sampling import image_sidecar, write_image, write_maps
    from ..sampling.compare import html_arguments

    meta = {**image_sidecar(pipe, job, request, model, image.size), **(extra or {})}
    written = write_image(job, image, meta)
    written += write_maps(maps, image, paths["png"], meta, words)
    written.append(viz.save_figure(viz.layer_word_grid(maps, words, image), paths["grid"]))
    for key, path in paths.items():
        if key.startswith("gif:"):
            written.append(viz.timestep_gif(maps, key[4:], path, image))
    if "self" in paths:
        written.append(viz.save_figure(viz.pixel_figure(maps, *request.maps.self_attn_pixel, image), paths["self"]))
    if "html" in paths:
        written.append(write_html(maps, paths["html"], image, **html_arguments(base)))
    return written
