"""``crossattn edit``: change an image through its words (prompt-to-prompt attention control).

For ``DIR/<slug of target>-<seed>`` writes ``.source.png`` (the source prompt), ``.plain.png`` (the
target from the same noise, no control), ``.edited.png`` (the target with the source's attention),
``.compare.png`` (the three, and under each its cross-attention map for the changed word: the source
word under the source, the target word under the others) and ``.json`` (both prompts, every
setting, the model hash). Every path is checked before sampling, so a refusal to overwrite loses no work.
Relation guidance is off for edits (see :mod:`crossattn.editing.prompt_edit`).

With ``--image FILE`` (SOURCE describes it) the rows start from the image inverted to noise
(:func:`crossattn.edit_image`): ``.source.png`` is the given image at the model's size,
``.reconstruction.png`` what the source prompt draws again from the inverted noise, and the sidecar
says how (``given_image``: DDIM or null-text, the reconstruction's PSNR against the image).
"""

from __future__ import annotations

import argparse
import math

from ..editing.job import plan, sample, write_outputs
from ..errors import BadArgument
from .flags import (
    add_device_flags,
    add_lora_flag,
    add_model_flag,
    add_negative_flag,
    add_out_flag,
    add_overwrite_flag,
    add_sampler_flags,
    add_seed_flag,
    add_size_flags,
    non_negative_int,
    positive_int,
)


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "edit",
        help="edit an image through its words (prompt-to-prompt attention control)",
        description="Sample SOURCE and TARGET from one noise; the target with the source's attention maps "
        "(Hertz et al., ICLR 2023) and without. Writes DIR/<target>-<seed>.source/.plain/.edited/.compare.png "
        "and .json. Relation guidance is off for edits.",
    )
    p.add_argument("source", metavar="SOURCE", help="the source prompt (quote it)")
    p.add_argument("--to", required=True, metavar="TARGET", help="the edited prompt, e.g. 'a blue circle'")
    add_control_flags(p)
    add_model_flag(p, "a diffusers pipeline folder (default: the shipped model)")
    add_lora_flag(p)
    add_image_flags(p)
    add_seed_flag(p)
    add_sampler_flags(p)
    add_negative_flag(p)
    add_out_flag(p)
    add_overwrite_flag(p)
    add_size_flags(p)
    add_device_flags(p)
    p.set_defaults(relation_guidance=0.0)
    return p


def add_control_flags(p) -> None:
    """How the target takes the source's attention and latents (:class:`~crossattn.editing.settings.EditSettings`)."""
    from ..editing.settings import (
        GIVEN_IMAGE_DEFAULTS,
        PINNED_AFTER_DDIM,
        PINNED_AFTER_NULL_TEXT,
        SHARED_STEPS,
        EditSettings,
    )

    p.add_argument(
        "--cross-steps",
        type=float,
        default=EditSettings.cross_steps,
        metavar="F",
        help="fraction of the first steps in which the target takes the source's cross-attention maps "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--self-steps",
        type=float,
        default=EditSettings.self_steps,
        metavar="F",
        help="fraction of the first steps in which it takes the source's self-attention maps (default: %(default)s)",
    )
    p.add_argument(
        "--reweight",
        nargs="+",
        metavar="WORD=F",
        help="scale the target's attention to WORD by F, e.g. circle=2 (0 removes it)",
    )
    p.add_argument(
        "--shared-steps",
        type=float,
        default=EditSettings.shared_steps,
        metavar="F",
        help="fraction of the first steps in which the target follows the source's latents (default: "
        f"{SHARED_STEPS:g}; with --image {GIVEN_IMAGE_DEFAULTS['shared_steps']:g})",
    )
    p.add_argument(
        "--pinned-steps",
        type=float,
        metavar="F",
        help="with --image: fraction of the first steps in which the source stays on the image's inversion path "
        f"(Direct Inversion; default: {PINNED_AFTER_DDIM:g} after DDIM inversion, {PINNED_AFTER_NULL_TEXT:g} after "
        "--null-text, whose states act as fitted only on their own path)",
    )
    p.add_argument(
        "--recolour",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with --image: the edited object keeps the image's outline and shading and takes the colour the model "
        "draws for the new words (default: on when every changed word is a colour's name, off otherwise)",
    )
    p.add_argument(
        "--no-blend",
        action="store_true",
        help="no local blending (by default the target stays the source's outside where the changed words attend)",
    )


def add_image_flags(p) -> None:
    """``--image FILE [--null-text [N]]``: edit an image the model did not draw."""
    p.add_argument(
        "--image",
        metavar="FILE",
        help="edit this image (SOURCE describes it): it is converted to RGB, resized to the model's size and "
        "inverted to the noise that draws it again (DDIM); writes <name>.reconstruction.png and its PSNR",
    )
    p.add_argument(
        "--null-text",
        dest="null_text_steps",
        type=positive_int,
        nargs="?",
        const=10,
        metavar="N",
        help="with --image: null-text inversion (Mokady et al., 2023), at most N optimiser steps per sampling "
        "step (default N: 10): the reconstruction is exact at any guidance",
    )
    p.add_argument(
        "--tune-steps",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="with --image: fit a small LoRA on the image with SOURCE for N steps first (UniTune / Imagic), invert "
        "and edit with it, then drop it (default: 0, none; slow: docs/benchmarks.md, issue 41)",
    )


def parse_reweight(items: list[str] | None) -> dict[str, float]:
    """``["circle=2", "red=0.5"]`` → ``{"circle": 2.0, "red": 0.5}``; a :class:`BadArgument` names a bad item."""
    weights = {}
    for item in items or []:
        word, sep, factor = item.partition("=")
        try:
            value = float(factor) if sep and word.strip() else None
        except ValueError:
            value = None
        if value is None or not (0 <= value < math.inf):
            raise BadArgument(f"--reweight {item!r}; accepted: WORD=F with F a finite number >= 0, e.g. circle=2")
        weights[word.strip().lower()] = value
    return weights


def run(args: argparse.Namespace) -> int:
    from ..attention.install import unet_of
    from ..editing.settings import EditSettings
    from ..files import refuse_overwrite
    from ..sampling import check_unet, load
    from .shared import model_from_args, request_from_args, set_threads

    settings = EditSettings(
        args.cross_steps,
        args.self_steps,
        parse_reweight(args.reweight),
        blend=not args.no_blend,
        shared_steps=args.shared_steps,
        pinned_steps=args.pinned_steps,  # None: chosen by the inversion
        recolour=args.recolour,
        tune_steps=args.tune_steps,
    )  # checks the values before anything loads
    if args.pinned_steps is not None and args.image is None:
        raise BadArgument(f"--pinned-steps {args.pinned_steps} needs an image to pin to (--image FILE)")
    if args.tune_steps and args.image is None:
        raise BadArgument(f"--tune-steps {args.tune_steps} fits the model to a given image (--image FILE)")
    request = request_from_args(args, [args.source, args.to])
    model = model_from_args(args)
    paths = plan(request)
    refuse_overwrite(list(paths.values()), request.overwrite)
    set_threads(args.threads)
    pipe = load(request, model, quiet=args.quiet)
    unet_of(pipe)  # SD3 / Flux: one line saying edit is not supported on them
    check_unet(pipe)
    result, maps = sample(pipe, request, settings)
    if request.image is not None:
        for note in result.given.notes:
            print(f"note: {note}", flush=True)
        print(f"reconstruction PSNR {result.psnr:.2f} dB", flush=True)
    for path in write_outputs(pipe, request, model, paths, result, maps):
        print(path, flush=True)
    return 0
