"""``crossattn maps``: one prompt → the image and its attention maps in every view.

Writes, for ``DIR/<slug>-<seed>``: ``.png`` + ``.json`` (the image and its sidecar),
``.maps.safetensors`` + ``.maps.json`` (the maps), ``.maps.png`` (word overlays), ``.grid.png``
(layer × word), with ``--per-step --gif`` one ``.<word>.gif`` per word, and with
``--self-attn-pixel X Y`` ``.self-X-Y.png``, with ``--html`` the ``.maps.html`` page. Every path
is checked before sampling, so a refusal to overwrite loses no work.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .shared import maps_paths


def parse_layers(patterns: list[str] | None) -> list[str | int] | None:
    """``--layers`` values: whole numbers are resolutions, anything else a name pattern."""
    if not patterns:
        return None
    return [int(p) if p.isdigit() else p for p in patterns]


def check_words(pipe, prompt: str, words: list[str] | None) -> list[str]:
    """The words to draw (default: all of the prompt's); unknown words fail before sampling."""
    from ..attention.maps import merge_words

    ids = pipe.tokenizer(prompt, truncation=True, max_length=pipe.tokenizer.model_max_length).input_ids
    known = [w for w, _ in merge_words(pipe.tokenizer.convert_ids_to_tokens(ids))]
    if not words:
        return list(dict.fromkeys(known))
    unknown = [w for w in words if w.lower() not in known]
    if unknown:
        raise ValueError(f"word {unknown[0]!r} is not in the prompt; words are: {', '.join(known)}")
    return [w.lower() for w in words]


def check_pixel(pipe, pixel) -> None:
    """``--self-attn-pixel X Y`` must lie inside the image the pipeline makes by default."""
    if pixel is None:
        return
    size = pipe.unet.config.sample_size
    side = (size[0] if isinstance(size, list | tuple) else size) * getattr(pipe, "vae_scale_factor", 1)
    x, y = pixel
    if x >= side or y >= side:
        raise ValueError(f"pixel ({x}, {y}) is outside the {side}x{side} image; X and Y go from 0 to {side - 1}")


def plan(args: argparse.Namespace) -> dict[str, Path]:
    """Every output path, by role."""
    from ..files import slugify

    stem = Path(args.out) / f"{slugify(args.prompt)}-{args.seed}"
    paths = {"png": stem.with_suffix(".png"), "sidecar": stem.with_suffix(".json")}
    paths.update(zip(("maps", "maps_json", "row"), maps_paths(paths["png"]), strict=True))
    paths["grid"] = stem.with_suffix(".grid.png")
    if args.self_attn_pixel:
        x, y = args.self_attn_pixel
        paths["self"] = stem.with_suffix(f".self-{x}-{y}.png")
    if getattr(args, "html", False):
        paths["html"] = stem.with_suffix(".maps.html")
    return paths


def run(args: argparse.Namespace) -> int:
    from ..files import refuse_overwrite, slugify
    from ..loading import check_lora_folder, check_model_folder
    from .shared import check_scheduler, check_unet, load_for_command

    if args.gif and not args.per_step:
        raise ValueError("--gif needs --per-step (the animation shows one frame per sampling step)")
    check_scheduler(args.scheduler)
    if args.model is not None:
        check_model_folder(args.model)
    if args.lora is not None:
        check_lora_folder(args.lora)
    paths = plan(args)
    pipe = load_for_command(args, [args.prompt])
    check_unet(pipe)
    words = check_words(pipe, args.prompt, args.words)
    check_pixel(pipe, args.self_attn_pixel)
    if args.gif:
        for word in words:
            paths[f"gif:{word}"] = paths["png"].with_suffix(f".{slugify(word)}.gif")
    refuse_overwrite(list(paths.values()), args.overwrite)
    image, maps = sample_with_maps(pipe, args)
    for path in write_views(pipe, args, paths, image, maps, words):
        print(path, flush=True)
    return 0


def sample_with_maps(pipe, args: argparse.Namespace):
    """One image of ``args.prompt`` and its maps (cross-attention, plus self with ``--self-attn-pixel``)."""
    import torch

    from ..attention.trace import trace

    kind = "both" if args.self_attn_pixel else "cross"
    per_head = getattr(args, "html", False)  # the page's head selector
    with trace(pipe, kind=kind, layers=parse_layers(args.layers), per_step=args.per_step, per_head=per_head) as tracer:
        image = pipe(
            args.prompt,
            negative_prompt=args.negative,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            relation_guidance=args.relation_guidance,
            generator=torch.Generator(device="cpu").manual_seed(args.seed),
        ).images[0]
    return image, tracer.maps()


def write_views(pipe, args, paths: dict[str, Path], image, maps, words: list[str]) -> list[Path]:
    """Write the image + sidecar, the maps, the overlay row, the grid, the GIFs and the self-attention map."""
    from .. import viz
    from ..loading import model_identity
    from .shared import ImageJob, relation_fields, scheduler_name, sidecar, write_image, write_maps

    job = ImageJob(args.prompt, 0, args.seed, paths["png"], paths["sidecar"], None)
    meta = sidecar(job, args, scheduler_name(pipe), model_identity(args.model, args.lora), image.size)
    meta.update(relation_fields(pipe, job.prompt, args.relation_guidance))
    written = write_image(job, image, meta)
    written += write_maps(maps, image, paths["png"], meta, words)
    written.append(viz.save_figure(viz.layer_word_grid(maps, words, image), paths["grid"]))
    for key, path in paths.items():
        if key.startswith("gif:"):
            written.append(viz.timestep_gif(maps, key[4:], path, image))
    if "self" in paths:
        written.append(viz.save_figure(viz.pixel_figure(maps, *args.self_attn_pixel, image), paths["self"]))
    if "html" in paths:
        written.append(maps.to_html(paths["html"], image))
    return written
