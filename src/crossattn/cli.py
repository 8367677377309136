"""``crossattn``: the command-line front. Only argparse lives here; each sub-command's work is in
``crossattn/commands/<name>.py``, imported when that command runs, so ``crossattn --help`` never
imports torch or diffusers."""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from .cli_flags import (
    add_device_flags,
    add_edit_image_flags,
    add_given_image_flags,
    add_lora_flag,
    add_relation_guidance_flag,
    add_sampler_flags,
    add_size_flags,
    non_negative_int,
    positive_int,
)
from .cli_training import add_finetune, add_train, add_train_clip

PROG = "crossattn"
MODEL_HELP = "a diffusers pipeline folder, or a run folder (its final/) (default: the shipped model)"


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (``crossattn: error: ...``), exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def add_generate(sub) -> None:
    p = sub.add_parser("generate", help="generate images from prompts", description="Generate images from prompts.")
    p.add_argument("prompt", nargs="*", help="one or more prompts (quote each)")
    p.add_argument("--prompts-file", metavar="F", help="a text file with one prompt per line")
    p.add_argument("--model", metavar="PATH", help=MODEL_HELP)
    add_lora_flag(p)
    add_relation_guidance_flag(p)
    p.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="seed of the first image; image i uses seed+i (default: %(default)s)",
    )
    add_sampler_flags(p, "classifier-free guidance scale; 1 = unguided (default: %(default)s)")
    p.add_argument("--negative", metavar="TEXT", default=None, help="negative prompt (default: empty)")
    p.add_argument("--num-images", type=positive_int, default=1, help="images per prompt (default: %(default)s)")
    p.add_argument("--out", metavar="DIR", default="outputs", help="output folder (default: %(default)s)")
    p.add_argument("--upscale", type=positive_int, metavar="K", help="also write a K× nearest-neighbour upscaled copy")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--maps", action="store_true", help="also write <name>.maps.safetensors/.json and <name>.maps.png")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        metavar="N",
        help="images sampled together, across prompts; the same images as one at a time (default: 16)",
    )
    add_size_flags(p)
    add_device_flags(p)
    p.set_defaults(command_module="generate")


def add_maps(sub) -> None:
    p = sub.add_parser(
        "maps",
        help="generate one image (or read one: --image) and draw its attention maps",
        description="Generate one image, or read a given one (--image), and write its cross-attention maps: "
        "per-word overlays, a layer x word grid, optionally a per-step GIF and a self-attention map.",
    )
    p.add_argument("prompt", help="the prompt (quote it)")
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
    p.add_argument(
        "--model",
        metavar="PATH",
        help="any local diffusers text-to-image folder with a UNet2DConditionModel (or a run folder: its final/)",
    )
    add_lora_flag(p)
    add_given_image_flags(p)
    add_relation_guidance_flag(p)
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default: %(default)s)")
    add_sampler_flags(p)
    p.add_argument("--negative", metavar="TEXT", default=None, help="negative prompt (default: empty)")
    p.add_argument("--out", metavar="DIR", default="outputs", help="output folder (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    add_size_flags(p)
    add_device_flags(p)
    p.set_defaults(command_module="maps")


def add_eval(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="measure prompt adherence and attention grounding",
        description="Generate a balanced, seeded prompt set, analyse the images, write DIR/report.json.",
    )
    p.add_argument("--model", metavar="PATH", help=MODEL_HELP)
    add_lora_flag(p)
    add_relation_guidance_flag(p)
    p.add_argument(
        "--n", type=positive_int, default=300, help="number of prompts, one image each (default: %(default)s)"
    )
    p.add_argument(
        "--seed", type=non_negative_int, default=0, help="seed of the prompt set and noise (default: %(default)s)"
    )
    add_sampler_flags(p)
    p.add_argument(
        "--tau", type=float, default=0.4, help="grounding threshold on the [0, 1] word map (default: %(default)s)"
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=16,
        metavar="N",
        help="images generated together (default: %(default)s)",
    )
    p.add_argument("--no-grounding", action="store_true", help="skip attention capture and grounding IoU")
    p.add_argument("--out", metavar="DIR", default="outputs/eval", help="output folder (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report.json / failures.png")
    add_device_flags(p, quiet=False, dtype=False)
    p.set_defaults(command_module="eval")


def add_export(sub) -> None:
    p = sub.add_parser(
        "export",
        help="write a captioned image folder (scenes or handwritten digits) for finetune",
        description="Write OUT: NNNNN.png images + metadata.jsonl (file_name, text), the folder finetune reads.",
    )
    p.add_argument("source", choices=("scenes", "digits"), help="procedural scenes or scikit-learn's digits")
    p.add_argument("out", metavar="OUT", help="a new or empty folder")
    p.add_argument("--n", type=positive_int, help="images (default: 50 scenes; every scan of the digits split)")
    p.add_argument("--shapes", nargs="+", metavar="SHAPE", help="scenes: shapes drawn, e.g. ring (default: the three)")
    p.add_argument("--kind", metavar="KIND", help="scenes: one, one_position, two_relation or two_and (default: a mix)")
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
    p.add_argument("--seed", type=non_negative_int, default=0, help="scenes / digit split seed (default: %(default)s)")
    p.add_argument("--resolution", type=positive_int, default=32, help="image side (default: %(default)s)")
    p.set_defaults(command_module="export")


def add_serve(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="the web explorer: generate and click through attention maps in a browser",
        description="A local Gradio page: generate an image, see every word's map, steps, heads, and click a "
        "pixel for its self-attention. Also an API: gradio_client.Client(url).predict(prompt=..., "
        "api_name='/generate'). Needs the [web] extra.",
    )
    p.add_argument("--model", metavar="PATH", help="a diffusers pipeline folder (default: the shipped model)")
    add_lora_flag(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 exposes it (default: %(default)s)")
    p.add_argument("--port", type=positive_int, default=7860, help="port (default: %(default)s)")
    add_size_flags(p)
    add_device_flags(p, quiet=False)
    p.set_defaults(command_module="serve")


def add_edit(sub) -> None:
    from .attention.edit_settings import PINNED_AFTER_DDIM, PINNED_AFTER_NULL_TEXT
    from .steering.editing import EditSettings

    p = sub.add_parser(
        "edit",
        help="edit an image through its words (prompt-to-prompt attention control)",
        description="Sample SOURCE and TARGET from one noise; the target with the source's attention maps "
        "(Hertz et al., ICLR 2023) and without. Writes DIR/<target>-<seed>.source/.plain/.edited/.compare.png "
        "and .json. Relation guidance is off for edits.",
    )
    p.add_argument("source", metavar="SOURCE", help="the source prompt (quote it)")
    p.add_argument("--to", required=True, metavar="TARGET", help="the edited prompt, e.g. 'a blue circle'")
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
        help="fraction of the first steps in which the target follows the source's latents (default: %(default)s)",
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
        "--no-blend",
        action="store_true",
        help="no local blending (by default the target stays the source's outside where the changed words attend)",
    )
    p.add_argument("--model", metavar="PATH", help="a diffusers pipeline folder (default: the shipped model)")
    add_lora_flag(p)
    add_edit_image_flags(p)
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--steps", type=positive_int, default=20, help="denoising steps (default: %(default)s)")
    p.add_argument("--guidance", type=float, default=4.0, help="classifier-free guidance scale (default: %(default)s)")
    p.add_argument("--scheduler", metavar="NAME", help="sampler: ddpm, ddim, dpm++ or euler (default: the model's own)")
    p.add_argument("--negative", metavar="TEXT", default=None, help="negative prompt (default: empty)")
    p.add_argument("--out", metavar="DIR", default="outputs", help="output folder (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    add_size_flags(p)
    add_device_flags(p)
    p.set_defaults(command_module="edit", relation_guidance=0.0)


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description="Text-to-image diffusion that makes cross-attention visible.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=Parser)
    add_generate(sub)
    add_maps(sub)
    add_edit(sub)
    add_eval(sub)
    add_export(sub)
    add_train(sub)
    add_train_clip(sub)
    add_finetune(sub)
    add_serve(sub)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    sys.stderr.write(f"{PROG}: warning: {message}\n")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "command_module"):
        parser.print_help()
        return 2
    warnings.showwarning = _one_line_warning
    module = importlib.import_module(f"crossattn.commands.{args.command_module}")
    try:
        return module.run(args) or 0
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        sys.stderr.write(f"{PROG}: error: {err}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
