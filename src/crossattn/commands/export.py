"""``crossattn export SOURCE OUT``: write a captioned image folder (``NNNNN.png`` + ``metadata.jsonl``),
the format ``crossattn finetune`` reads. Sources: ``scenes`` (the procedural scenes, any of the
drawable shapes, e.g. ``--shapes ring`` for the new-word example) and ``digits`` (scikit-learn's
1,797 real handwritten 8×8 scans, captioned ``"a handwritten digit seven"``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import BadArgument
from .flags import add_seed_flag, non_negative_int, positive_int

DEFAULT_SCENES = 50  # the ring example's bar: a new word from ≤ 50 images


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "export",
        help="write a captioned image folder (scenes or handwritten digits) for finetune",
        description="Write OUT: NNNNN.png images + metadata.jsonl (file_name, text), the folder finetune reads.",
    )
    p.add_argument("source", choices=("scenes", "digits"), help="procedural scenes or scikit-learn's digits")
    p.add_argument("out", metavar="OUT", help="a new or empty folder")
    p.add_argument("--n", type=positive_int, help="images (default: 50 scenes; every scan of the digits split)")
    p.add_argument("--shapes", nargs="+", metavar="SHAPE", help="scenes: shapes drawn, e.g. ring (default: the three)")
    p.add_argument(
        "--kind",
        metavar="KIND",
        help="scenes: one, one_position, two_relation, two_and, or the counting kinds count ('two red circles') "
        "and count_and ('... and a blue square') (default: a mix of the first four)",
    )
    p.add_argument(
        "--prior",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="scenes: N more of the default shapes after the --n drawn ones, so a new shape does not "
        "take over a known one (default: %(default)s)",
    )
    p.add_argument(
        "--prior-shapes",
        nargs="+",
        metavar="SHAPE",
        help="scenes: which known shapes the --prior scenes show, e.g. circle for rings (default: the three)",
    )
    p.add_argument(
        "--split", choices=("train", "held_out", "all"), default="train", help="digits: which scans (default: train)"
    )
    add_seed_flag(p, "scenes / digit split seed (default: %(default)s)")
    p.add_argument("--resolution", type=positive_int, default=32, help="image side (default: %(default)s)")
    return p


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.source == "scenes":
        written = export_scenes(args, out)
    else:
        from ..data.digits import export_digits

        if args.shapes or args.kind or args.prior or args.prior_shapes:
            raise BadArgument(
                "--shapes, --kind, --prior and --prior-shapes are for scenes; digits take --split and --n"
            )
        export_digits(out, args.split, args.n, args.seed, args.resolution)
        written = len(list(out.glob("*.png")))
    print(f"wrote {written} images and metadata.jsonl to {out}")
    return 0


def export_scenes(args: argparse.Namespace, out: Path) -> int:
    from ..data.captions import COUNT_KINDS, KINDS, SHAPES, check_shapes
    from ..data.shapes import export_image_folder

    if args.kind is not None and args.kind not in KINDS + COUNT_KINDS:
        raise BadArgument(f"unknown scene kind {args.kind!r}; kinds: {', '.join(KINDS + COUNT_KINDS)}")
    if args.split != "train":
        raise BadArgument(f"--split {args.split} is for digits; scenes are drawn from --seed (leave --split out)")
    shapes = check_shapes(tuple(args.shapes)) if args.shapes else SHAPES
    prior_shapes = check_shapes(tuple(args.prior_shapes)) if args.prior_shapes else SHAPES
    if args.prior_shapes and not args.prior:
        raise BadArgument("--prior-shapes needs --prior N (how many prior scenes to draw)")
    n = args.n or DEFAULT_SCENES
    export_image_folder(out, n, args.seed, args.resolution, args.kind, shapes, args.prior, prior_shapes)
    return n + args.prior
