"""``crossattn export SOURCE OUT``: write a captioned image folder (``NNNNN.png`` + ``metadata.jsonl``),
the format ``crossattn finetune`` reads. Sources: ``scenes`` (the procedural scenes, any of the
drawable shapes, e.g. ``--shapes ring`` for the new-word example) and ``digits`` (scikit-learn's
1,797 real handwritten 8×8 scans, captioned ``"a handwritten digit seven"``)."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_SCENES = 50  # the ring example's bar: a new word from ≤ 50 images


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.source == "scenes":
        written = export_scenes(args, out)
    else:
        from ..data.digits import export_digits

        if args.shapes or args.kind or args.prior or args.prior_shapes:
            raise ValueError("--shapes, --kind, --prior and --prior-shapes are for scenes; digits take --split and --n")
        export_digits(out, args.split, args.n, args.seed, args.resolution)
        written = len(list(out.glob("*.png")))
    print(f"wrote {written} images and metadata.jsonl to {out}")
    return 0


def export_scenes(args: argparse.Namespace, out: Path) -> int:
    from ..data.captions import KINDS, SHAPES, check_shapes
    from ..data.shapes import export_image_folder

    if args.kind is not None and args.kind not in KINDS:
        raise ValueError(f"unknown scene kind {args.kind!r}; kinds: {', '.join(KINDS)}")
    if args.split != "train":
        raise ValueError("--split is for digits; scenes are drawn from --seed")
    shapes = check_shapes(tuple(args.shapes)) if args.shapes else SHAPES
    prior_shapes = check_shapes(tuple(args.prior_shapes)) if args.prior_shapes else SHAPES
    if args.prior_shapes and not args.prior:
        raise ValueError("--prior-shapes needs --prior N (how many prior scenes to draw)")
    n = args.n or DEFAULT_SCENES
    export_image_folder(out, n, args.seed, args.resolution, args.kind, shapes, args.prior, prior_shapes)
    return n + args.prior
