"""Edits of given images (issue 25): reconstruction PSNR, layout, attribute, and cost, on scenes the model did not draw.

The edit pairs are ``edit_consistency.py``'s (one and two objects, colour and shape swaps in turn).
Each source caption is drawn two ways, with exact masks, not by the model:

- *export*: ``scene_from_caption`` (what ``crossattn export`` writes), 32×32;
- *pillow*: Pillow's ``ImageDraw`` at 64×64 (the model reads it resized to 32×32) with a darker
  outline of 1–3 px, at the export scene's places.

Each is inverted with the source caption (DDIM; null-text with ``--null-text-steps``) and edited with
``crossattn.edit_image``'s defaults (after DDIM inversion: one checked fixed-point re-solve a step, the source
row's unconditional states the source prompt's own, negative-prompt inversion, and the source row pinned to
the inversion path for the first 40 % of the steps; after null-text: the source row kept on the path its
states were fitted along at every step, a fit that misses refitted with larger steps). *PSNR* is the edit's
reconstruction (its source row, as the sidecar's); with DDIM, *PSNR unpinned* is the plain DDIM reconstruction
too: the source prompt sampled from the inverted noise with guidance against the empty prompt, nothing pinned.
Judged by the scene analyzer: *layout kept*, every object of the edited image within ``--tolerance`` px (1.5)
of the given image's under the best pairing (as many objects); *attribute right*, the swapped object found
with the target's colour and shape; *other kept* (two objects), the unedited object still found with its
colour and shape. Bars: PSNR ≥ 25 dB (DDIM), ≥ 35 dB (null-text); layout and attribute ≥ 0.90, other kept ≥
0.95.

Cost (``--cost N`` repeats, interleaved, median wall seconds): maps of a given image against the maps of a
generated one, an edit of a given image (DDIM inversion included) against an edit of a generated one,
null-text against DDIM.

    python benchmarks/given_image_edit.py [--n 100] [--null-text-steps 10] [--cost 3] [--threads 1] [--json PATH]
        [--draws export pillow]   # one drawing per process, --cost 0; then --n 0 --cost N alone for the cost
        [--variants default ...]  # edit settings by name (edit_variants.py), each judged on the same inversion
        [--kinds one/colour two/colour]  # some kinds of pair only (edit_consistency.KINDS)
    python benchmarks/given_image_edit.py --readable RUN.json  # its tables, also over the pairs whose target the
                                                                # analyzer reads in the drawing's own style
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from edit_consistency import KINDS, attribute_right, centroids, edit_pairs, layout_shift  # noqa: E402
from edit_variants import COLOUR_WEIGHT, VARIANTS  # noqa: E402
from pillow_scenes import pillow_scene  # noqa: E402

from crossattn.attention.trace import trace  # noqa: E402
from crossattn.data.shapes import scene_from_caption  # noqa: E402
from crossattn.editing.image_edit import edit_image, invert_image  # noqa: E402
from crossattn.editing.prompt_edit import edit  # noqa: E402
from crossattn.evaluation import check_caption  # noqa: E402
from crossattn.models.loading import load_pipeline  # noqa: E402
from crossattn.sampling.given_image import maps_of_image  # noqa: E402
from crossattn.sampling.inversion import (  # noqa: E402
    NULL_TEXT_LR,
    ddim_scheduler,
    psnr,
    scheduler_swapped,
    tolerance,
)

DRAWS = ("export", "pillow")
MODES = ("ddim", "null-text")


def judge(pair: dict, given: Image.Image, edited) -> dict:
    """Layout, attribute and the other object, by the analyzer on the given and the edited image."""
    source = check_caption(np.asarray(given.resize((32, 32))), pair["source"])
    check = check_caption(np.asarray(edited.result.edited), pair["target"])
    row = {"kind": pair["kind"], "psnr": edited.psnr, "source_found": attribute_right(source, pair["slot"])}
    row["shift"] = layout_shift(centroids(source), centroids(check))
    row["attribute"] = attribute_right(check, pair["slot"])
    if len(check.spec.objects) == 2:
        row["other_kept"] = check.matches[1 - pair["slot"]] is not None
    return row


def unpinned_psnr(pipe, given) -> float:
    """PSNR of the plain DDIM reconstruction: the source prompt sampled from the inverted noise, guided."""
    with scheduler_swapped(pipe, ddim_scheduler(pipe)):
        image = pipe(
            given.prompt,
            latents=given.inversion.latents,
            num_inference_steps=given.num_inference_steps,
            guidance_scale=given.guidance_scale,
            relation_guidance=0,
        ).images[0]
    return psnr(image, given.image)


def fit_record(inversion) -> dict:
    """A null-text fit's learning rate (the larger one after a refit) and its last step's loss in tolerances."""
    losses = inversion.null_text_losses
    return {"null_text_lr": inversion.null_text_lr, "last_miss": losses[-1] / tolerance(len(losses) - 1)}


def summary(rows: list[dict], max_shift: float) -> dict:
    two = [r for r in rows if "other_kept" in r]
    unpinned = [r["psnr_unpinned"] for r in rows if "psnr_unpinned" in r]
    return {
        "n": len(rows),
        "psnr_mean": float(np.mean([r["psnr"] for r in rows])),
        "psnr_min": float(np.min([r["psnr"] for r in rows])),
        "layout_kept": float(np.mean([r["shift"] <= max_shift for r in rows])),
        "attribute_right": float(np.mean([r["attribute"] for r in rows])),
        "other_kept": float(np.mean([r["other_kept"] for r in two])) if two else None,
        "source_found": float(np.mean([r["source_found"] for r in rows])),
        **(
            {"refitted": int(sum(r["null_text_lr"] != NULL_TEXT_LR for r in rows))} if "null_text_lr" in rows[0] else {}
        ),
        **(
            {"psnr_unpinned_mean": float(np.mean(unpinned)), "psnr_unpinned_min": float(np.min(unpinned))}
            if unpinned
            else {}
        ),
        "psnr_at_bar": {
            "pinned": int(sum(r["psnr"] >= r["bar"] for r in rows)),
            **({"unpinned": int(sum(x >= 25 for x in unpinned))} if unpinned else {}),
        },
    }


def target_readable(n: int, seed: int, kinds: list[str]) -> dict[str, list[bool]]:
    """Per drawing style, per pair of ``kinds`` (in the run's order): does the analyzer read that renderer's own
    drawing of the *target* (the same places and outline widths, the target's colours) as the target, the edited
    object and the other one? Where it
    does not, an edit in that style cannot be judged right by it (the Pillow renderer's yellow and orange with
    their outline 60 % darker read as another colour: the given image's source object is not found either); a
    property of the pair and the renderer, not of the edit, so no model runs."""
    rng = np.random.default_rng(seed)
    out = {draw: [] for draw in DRAWS}
    for i, pair in enumerate(edit_pairs(n, seed)):
        scene = scene_from_caption(pair["source"], np.random.default_rng([seed, i]))
        widths = copy.deepcopy(rng)  # the outline widths the source drawing takes
        pillow_scene(scene, rng)  # the run's stream: every pair draws
        if pair["kind"] not in kinds:
            continue
        target = scene_from_caption(pair["target"], np.random.default_rng([seed, i]))  # the same places
        drawn = {"export": Image.fromarray(target.image), "pillow": pillow_scene(target, widths)[0]}
        for draw, image in drawn.items():
            check = check_caption(np.asarray(image.resize((32, 32))), pair["target"])  # as judge reads the source
            out[draw].append(attribute_right(check, pair["slot"]) and all(m is not None for m in check.matches))
    return out


def readable_tables(path: str) -> None:
    """A run's summaries (its JSON) over all its pairs and over those whose target the analyzer can read in the
    drawing's style (:func:`target_readable`)."""
    run = json.loads(Path(path).read_text())
    args = run["args"]
    readable = target_readable(args["n"], args["seed"], args.get("kinds", list(KINDS)))
    for key, rows in run["rows"].items():
        legible = [r for r, ok in zip(rows, readable[key.split("/")[0]], strict=True) if ok]
        for name, chosen in (("all", rows), ("target readable", legible)):
            brief = {k: v for k, v in summary(chosen, args["tolerance"]).items() if k in SHOWN}
            print(key, name, json.dumps(brief))


SHOWN = ("n", "psnr_mean", "psnr_min", "layout_kept", "attribute_right", "other_kept", "source_found")


def timed(fn) -> float:
    tick = time.perf_counter()
    fn()
    return time.perf_counter() - tick


def cost(pipe, pair: dict, image: Image.Image, null_text_steps: int, repeats: int) -> dict:
    """Median wall seconds of each job, interleaved ``repeats`` times."""
    g = lambda: torch.Generator().manual_seed(pair["seed"])  # noqa: E731

    def generated_maps():
        with trace(pipe):
            pipe(pair["source"], generator=g(), relation_guidance=0)

    jobs = {
        "maps of a generated image": generated_maps,
        "maps of a given image": lambda: maps_of_image(pipe, image, pair["source"], generator=g()),
        "edit of a generated image": lambda: edit(pipe, pair["source"], pair["target"], generator=g()),
        "edit of a given image (DDIM)": lambda: edit_image(pipe, image, pair["source"], pair["target"]),
        "edit of a given image (null-text)": lambda: edit_image(
            pipe, image, pair["source"], pair["target"], null_text_steps=null_text_steps
        ),
    }
    times = {name: [] for name in jobs}
    for _ in range(repeats):
        for name, job in jobs.items():
            times[name].append(timed(job))
    medians = {name: statistics.median(t) for name, t in times.items()}
    medians["ratios"] = {
        "maps given / generated": medians["maps of a given image"] / medians["maps of a generated image"],
        "edit given (DDIM) / generated": medians["edit of a given image (DDIM)"] / medians["edit of a generated image"],
        "null-text / DDIM": medians["edit of a given image (null-text)"] / medians["edit of a given image (DDIM)"],
    }
    return medians


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="edit pairs (each drawn both ways)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--null-text-steps", type=int, default=10)
    parser.add_argument("--tolerance", type=float, default=1.5)
    parser.add_argument("--cost", type=int, default=3, help="interleaved repeats of the cost jobs (0: skip)")
    parser.add_argument("--threads", type=int, default=1)
    subsets = {
        "--draws": (DRAWS, "which drawings to edit (one per process: run two)"),
        "--modes": (MODES, "which inversions to edit with (a re-run of one after a change to it)"),
        "--kinds": (KINDS, "which kinds of pair to edit (the others are skipped, their drawings still drawn)"),
    }
    for flag, (choices, text) in subsets.items():  # each: some of its choices, all by default
        parser.add_argument(flag, nargs="+", choices=choices, default=list(choices), help=text)
    parser.add_argument("--json", help="write the rows and the summary here")
    parser.add_argument(
        "--readable",
        metavar="RUN_JSON",
        help="no run: RUN_JSON's summaries, all pairs and those "
        "whose target the analyzer reads in the drawing's own style (target_readable)",
    )
    plain = [name for name, knobs in VARIANTS.items() if COLOUR_WEIGHT not in knobs]  # no colour swap to re-weight
    parser.add_argument(
        "--variants", nargs="+", choices=plain, default=["default"], help="edit settings (edit_variants.py)"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.readable:
        return readable_tables(args.readable)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    pipe = load_pipeline()
    pipe.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(args.seed)
    rows = {f"{draw}/{mode}/{v}": [] for draw in args.draws for mode in args.modes for v in args.variants}
    for i, pair in enumerate(edit_pairs(args.n, args.seed)):
        scene = scene_from_caption(pair["source"], np.random.default_rng([args.seed, i]))
        images = {"export": Image.fromarray(scene.image), "pillow": pillow_scene(scene, rng)[0]}  # rng: every pair
        if pair["kind"] not in args.kinds:
            continue
        for draw in args.draws:
            image = images[draw]
            for mode in args.modes:
                steps = args.null_text_steps if mode == "null-text" else 0
                given = invert_image(pipe, image, pair["source"], null_text_steps=steps)
                unpinned = {} if steps else {"psnr_unpinned": unpinned_psnr(pipe, given)}
                for variant in args.variants:
                    edited = edit_image(pipe, given, pair["source"], pair["target"], **VARIANTS[variant])
                    row = {**judge(pair, image, edited), "bar": 35.0 if steps else 25.0, **unpinned}
                    if steps:
                        row.update(fit_record(given.inversion))
                    rows[f"{draw}/{mode}/{variant}"].append(row)
        print(
            i, pair["source"], "->", pair["target"], {k: round(v[-1]["psnr"], 1) for k, v in rows.items()}, flush=True
        )
    report = {"args": vars(args), "summary": {k: summary(v, args.tolerance) for k, v in rows.items() if v}}
    if args.cost:
        pair = edit_pairs(1, args.seed)[0]
        image = Image.fromarray(scene_from_caption(pair["source"], np.random.default_rng([args.seed, 0])).image)
        report["cost_seconds"] = cost(pipe, pair, image, args.null_text_steps, args.cost)
    print(json.dumps({k: report[k] for k in report if k != "args"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({**report, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
