"""Do edits of a given image keep its geometry? Colour swaps on drawings unlike the training data (issue 41).

Each drawing of ``drawings.py`` (five styles in turn, one and two objects in turn) has one object's colour
swapped for another palette colour ("a red square above a blue circle" → "a green square above a blue
circle"), inverted with the source caption (DDIM, or null-text) and edited with ``crossattn.edit_image``
under each ``--variants`` entry (``edit_variants.py``: edit settings by name, the default's first). Judged
against the drawing's exact 32×32 masks, with a colour labeller of its own (each pixel is the palette colour, fill or
darker outline, whose blend over the drawing's paper explains it best, and that colour where the blend is at
least half; else paper), so off-white papers and outlines are read as the drawing means them:

- *in place*: the edited object (pixels labelled the target colour, within 3 px of the source object and not
  on the other object) has its centroid within ``--tolerance`` px (1.5) of the source object's mask's;
- *outline kept*: that object's IoU with the source object's mask ≥ 0.8;
- *attribute right*: at least half of the source object's mask is labelled the target colour;
- *other unchanged* (two objects): the other object, labelled by its own colour, in place and IoU ≥ 0.8;
- *background PSNR*: the edited image against the given one (both at 32×32) outside every object's mask
  grown by 1 px (an anti-aliased rim belongs to neither); *PSNR*: the edit's reconstruction (its source row).
*source found*: the labeller on the given image finds the source object with IoU ≥ 0.8 (the measure's check).

``--cache DIR`` keeps every inversion (safetensors + JSON), so a re-run with other variants skips the
inversions (null-text's are most of the cost; a variant with ``tune_steps`` inverts on its own per-image fit,
never cached). ``--cost N``: an edit of a given drawing (DDIM, the default settings) against an edit of a
generated image, interleaved N times, medians (bar ≤ 2.0×); ``--cost-tune 30 80``: tuned edits of a given
drawing beside them.

    python benchmarks/edit_geometry.py --n 100 --modes ddim --threads 1 --cache outputs/geometry_cache \\
        [--variants default before ...] [--cost 5] [--json PATH]
    python benchmarks/edit_geometry.py --tables RUN.json ... [--compact] [--first N]   # merged tables of runs
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from drawings import STYLE_NAMES, Drawing, at_model_size, drawing_set  # noqa: E402
from edit_variants import COLOUR_WEIGHT, TUNING, VARIANTS  # noqa: E402

from crossattn.data.captions import COLOURS, format_caption  # noqa: E402
from crossattn.editing.image_edit import GivenInversion, edit_image, invert_image  # noqa: E402
from crossattn.editing.image_tuning import TuningConfig  # noqa: E402
from crossattn.files import atomic_write, atomic_write_json  # noqa: E402
from crossattn.sampling.inversion import Inversion  # noqa: E402

MODES = ("ddim", "null-text")
OUTLINE_SHADE = 0.55  # drawings.py's outline darkening
SWAP_STREAM = 0x41


def colour_swap(drawing: Drawing, index: int, seed: int) -> dict:
    """The edit of ``drawing``: one object (drawn at random) gets a palette colour no object has."""
    rng = np.random.default_rng([seed, SWAP_STREAM, index])
    slot = int(rng.integers(len(drawing.objects)))
    taken = {o.colour for o in drawing.objects}
    colour = str(rng.choice([c for c in COLOURS if c not in taken]))
    words = drawing.words
    words[slot] = (colour, words[slot][1])
    target = format_caption(words, relation=drawing.relation)
    return {"source": drawing.caption, "target": target, "slot": slot, "colour": colour}


def labels(image: np.ndarray, paper: np.ndarray) -> np.ndarray:
    """``(32, 32)`` labels of an RGB image: ``k`` for the palette colour ``k // 2`` (even: its fill, odd: its
    outline shade), -1 for paper. Each pixel takes the colour whose blend ``paper + α (c − paper)`` (α in
    [0, 1]) comes nearest it, and that colour where α ≥ 0.5."""
    fills = np.array(list(COLOURS.values()), np.float32)  # (K, 3)
    colours = np.stack([fills, fills * OUTLINE_SHADE], axis=1).reshape(-1, 3)  # (2K, 3): fill, shade, ...
    pixels = image.astype(np.float32).reshape(-1, 1, 3) - paper  # (N, 1, 3)
    lines = colours[None] - paper  # (1, 2K, 3)
    alpha = ((pixels * lines).sum(-1) / (lines * lines).sum(-1)).clip(0, 1)  # (N, 2K)
    miss = np.linalg.norm(pixels - alpha[..., None] * lines, axis=-1)  # (N, 2K)
    best = miss.argmin(1)  # (N,)
    chosen = np.take_along_axis(alpha, best[:, None], 1)[:, 0] >= 0.5
    return np.where(chosen, best, -1).reshape(image.shape[:2])


def grown(mask: np.ndarray, px: int) -> np.ndarray:
    """``mask`` dilated by ``px`` pixels (a square neighbourhood)."""
    out = mask.copy()
    for dy in range(-px, px + 1):
        for dx in range(-px, px + 1):
            out |= np.roll(np.roll(mask, dy, 0), dx, 1)
    return out


def centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean() + 0.5, ys.mean() + 0.5]) if len(xs) else np.array([np.inf, np.inf])


def found(label_map: np.ndarray, colour: str, mask: np.ndarray, avoid: np.ndarray) -> np.ndarray:
    """The pixels labelled ``colour`` (fill or shade) within 3 px of ``mask`` and off ``avoid``."""
    k = 2 * list(COLOURS).index(colour)
    return ((label_map == k) | (label_map == k + 1)) & grown(mask, 3) & ~avoid


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 0.0


def masked_psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    diff = a.astype(np.float64)[where] - b.astype(np.float64)[where]
    mse = float(np.mean(diff**2)) if diff.size else 0.0
    return float("inf") if mse == 0 else 10.0 * float(np.log10(255.0**2 / mse))


def judge(drawing: Drawing, swap: dict, given: np.ndarray, edited: np.ndarray, tolerance: float) -> dict:
    """The measures of one edit (see the module's docstring); ``given`` / ``edited``: ``(32, 32, 3)`` uint8."""
    paper = np.array(drawing.background, np.float32)
    slot, masks = swap["slot"], drawing.masks
    source = masks[slot]
    other = masks[1 - slot] if len(masks) == 2 else np.zeros_like(source)
    out_labels, in_labels = labels(edited, paper), labels(given, paper)
    obj = found(out_labels, swap["colour"], source, other)
    shift = float(np.linalg.norm(centroid(obj) - centroid(source)))
    row = {
        "style": drawing.style,
        "objects": len(masks),
        "shift": shift,
        "in_place": bool(shift <= tolerance),
        "iou": iou(obj, source),
        "attribute": bool(obj[source].mean() >= 0.5),
        "source_found": iou(found(in_labels, drawing.objects[slot].colour, source, other), source) >= 0.8,
        "background_psnr": masked_psnr(edited, given, ~grown(np.logical_or.reduce(masks), 1)),
    }
    if len(masks) == 2:
        kept = found(out_labels, drawing.objects[1 - slot].colour, other, source)
        row["other_kept"] = bool(
            iou(kept, other) >= 0.8 and np.linalg.norm(centroid(kept) - centroid(other)) <= tolerance
        )
    return row


def knobs(variant: str, swap: dict) -> dict:
    """``edit_image``'s keywords for ``variant`` on the edit ``swap`` (its new colour word re-weighted when asked)."""
    knobs = {k: v for k, v in VARIANTS[variant].items() if k != TUNING}  # the fit's config: tuned_inversion's
    if COLOUR_WEIGHT in knobs:
        knobs["reweight"] = {swap["colour"]: knobs.pop(COLOUR_WEIGHT)}
    return knobs


def save_inversion(path: Path, given: GivenInversion) -> None:
    """``given``'s tensors in ``path`` (.safetensors) and the rest beside it (.json); read by ``load_inversion``."""
    from safetensors.torch import save_file

    inv = given.inversion
    tensors = {"latents": inv.latents}
    tensors.update({f"trajectory.{i}": x for i, x in enumerate(inv.trajectory)})
    tensors.update({f"null.{t}": x for t, x in inv.null_embeddings.items()})
    tensors.update({f"null_path.{i}": x for i, x in enumerate(inv.null_text_path)})
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}  # shared views → own copies
    meta = {
        "timesteps": inv.timesteps,
        "losses": inv.null_text_losses,
        "fixed_point_steps": inv.fixed_point_steps,
        "null_text_lr": inv.null_text_lr,
        "given": [given.prompt, given.num_inference_steps, given.guidance_scale, given.null_text_steps],
        "notes": list(given.notes),
    }
    atomic_write(path.with_suffix(".safetensors"), lambda p: save_file(tensors, str(p)))
    atomic_write_json(path.with_suffix(".json"), meta)


def load_inversion(path: Path, image) -> GivenInversion | None:
    """The inversion ``save_inversion`` kept at ``path``, or None when there is none."""
    from safetensors.torch import load_file

    if not path.with_suffix(".json").exists():
        return None
    meta = json.loads(path.with_suffix(".json").read_text())
    tensors = load_file(str(path.with_suffix(".safetensors")))

    def series(prefix: str) -> list[torch.Tensor]:
        keys = sorted((k for k in tensors if k.startswith(prefix + ".")), key=lambda k: int(k.rsplit(".", 1)[1]))
        return [tensors[k] for k in keys]

    nulls = {t: tensors[f"null.{t}"] for t in meta["timesteps"] if f"null.{t}" in tensors}  # sampling order
    inv = Inversion(
        tensors["latents"], series("trajectory"), meta["timesteps"], nulls, meta["losses"], meta["fixed_point_steps"]
    )
    inv.null_text_path, inv.null_text_lr = series("null_path"), meta["null_text_lr"]
    prompt, steps, guidance, null_steps = meta["given"]
    return GivenInversion(image, inv, tuple(meta["notes"]), prompt, steps, guidance, null_steps)


def inverted(pipe, drawing: Drawing, swap: dict, mode: str, args, key: str) -> GivenInversion:
    """The drawing inverted with its caption, from the cache when it holds it."""
    path = Path(args.cache) / key if args.cache else None
    if path is not None:
        cached = load_inversion(path, at_model_size(drawing))
        if cached is not None and cached.prompt == swap["source"]:  # a caption since reworded: invert again
            return cached
    steps = args.null_text_steps if mode == "null-text" else 0
    given = invert_image(pipe, drawing.image, swap["source"], null_text_steps=steps)
    if path is not None:
        save_inversion(path, given)
    return given


def tuned_inversion(pipe, drawing: Drawing, swap: dict, mode: str, args, variant: str) -> GivenInversion | None:
    """For a variant with ``tune_steps``: the drawing inverted on its own per-image fit (never cached: the fit
    belongs to the variant); None for the others, which edit the shared inversion."""
    steps = VARIANTS[variant].get("tune_steps", 0)
    if not steps:
        return None
    tuning = TuningConfig(**VARIANTS[variant].get(TUNING, {}))
    null_steps = args.null_text_steps if mode == "null-text" else 0
    return invert_image(
        pipe, drawing.image, swap["source"], null_text_steps=null_steps, tune_steps=steps, tuning=tuning
    )


def summary(rows: list[dict]) -> dict:
    """The rates and PSNRs of ``rows``, all and per style."""

    def rates(chosen: list[dict]) -> dict:
        two = [r for r in chosen if "other_kept" in r]
        background = [r["background_psnr"] for r in chosen]
        return {
            "n": len(chosen),
            "in_place": float(np.mean([r["in_place"] for r in chosen])),
            "outline_kept": float(np.mean([r["iou"] >= 0.8 for r in chosen])),
            "attribute_right": float(np.mean([r["attribute"] for r in chosen])),
            "other_unchanged": float(np.mean([r["other_kept"] for r in two])) if two else None,
            "background_psnr_mean": float(np.mean(np.minimum(background, 99.0))),
            "background_psnr_min": float(np.min(background)),
            "background_at_35": float(np.mean([b >= 35 for b in background])),
            "psnr_mean": float(np.mean([r["psnr"] for r in chosen])),
            "psnr_min": float(np.min([r["psnr"] for r in chosen])),
            "iou_mean": float(np.mean([r["iou"] for r in chosen])),
            "source_found": float(np.mean([r["source_found"] for r in chosen])),
        }

    out = {"all": rates(rows)}
    out.update(
        {s: rates([r for r in rows if r["style"] == s]) for s in STYLE_NAMES if any(r["style"] == s for r in rows)}
    )
    return out


def cost(pipe, drawing: Drawing, swap: dict, repeats: int, tune_steps: tuple[int, ...] = ()) -> dict:
    """Median wall seconds of an edit of the given drawing (DDIM inversion included) and of a generated image;
    with ``tune_steps``, also of edits of the given drawing on a per-image fit of each many steps."""
    from crossattn.editing.prompt_edit import edit

    jobs = {
        "edit of a given drawing (DDIM)": lambda: edit_image(pipe, drawing.image, swap["source"], swap["target"]),
        "edit of a generated image": lambda: edit(
            pipe, swap["source"], swap["target"], generator=torch.Generator().manual_seed(0)
        ),
    }
    for steps in tune_steps:
        jobs[f"edit of a given drawing (DDIM, tuned {steps} steps)"] = lambda steps=steps: edit_image(
            pipe, drawing.image, swap["source"], swap["target"], tune_steps=steps
        )
    times = {name: [] for name in jobs}
    for _ in range(repeats):
        for name, job in jobs.items():
            tick = time.perf_counter()
            job()
            times[name].append(time.perf_counter() - tick)
    medians = {name: statistics.median(t) for name, t in times.items()}
    medians["given / generated"] = medians["edit of a given drawing (DDIM)"] / medians["edit of a generated image"]
    for steps in tune_steps:
        tuned = medians[f"edit of a given drawing (DDIM, tuned {steps} steps)"]
        medians[f"tuned {steps} / generated"] = tuned / medians["edit of a generated image"]
    return medians


def save_sheet(path: str, pictures: list[list[np.ndarray]], zoom: int = 4) -> None:
    """One row per drawing: the given image, then each mode × variant's edit, ``zoom`` × enlarged."""
    from PIL import Image

    grid = np.concatenate([np.concatenate(row, axis=1) for row in pictures], axis=0)  # (rows·32, cols·32, 3)
    sheet = Image.fromarray(grid).resize((grid.shape[1] * zoom, grid.shape[0] * zoom), Image.NEAREST)
    atomic_write(path, lambda p: sheet.save(p, format="PNG"))


def run(pipe, args) -> dict:
    """Every drawing × mode × variant, judged; the JSON rewritten after each drawing; the first
    ``--sheet-rows`` drawings' edits on a sheet (given image first)."""
    rows = {f"{mode}/{variant}": [] for mode in args.modes for variant in args.variants}
    pictures = []
    for i, drawing in enumerate(drawing_set(args.n, args.seed)):
        if i < args.start:
            continue
        swap = colour_swap(drawing, i, args.seed)
        given_array = np.asarray(at_model_size(drawing))
        pictures.append([given_array])
        for mode in args.modes:
            given = inverted(pipe, drawing, swap, mode, args, f"{args.seed}-{i}-{mode}")
            for variant in args.variants:
                tick = time.perf_counter()
                inversion = tuned_inversion(pipe, drawing, swap, mode, args, variant) or given
                edited = edit_image(
                    pipe, inversion, swap["source"], swap["target"], plain=False, **knobs(variant, swap)
                )
                row = judge(drawing, swap, given_array, np.asarray(edited.result.edited), args.tolerance)
                row.update(index=i, psnr=edited.psnr, source=swap["source"], target=swap["target"])
                row.update(seconds=time.perf_counter() - tick)  # the edit, with a tuned variant's fit and inversion
                rows[f"{mode}/{variant}"].append(row)
                pictures[-1].append(np.asarray(edited.result.edited))
        brief = {
            k: (v[-1]["in_place"], round(v[-1]["iou"], 2), round(v[-1]["background_psnr"], 1)) for k, v in rows.items()
        }
        print(i, drawing.style, swap["source"], "->", swap["target"], brief, flush=True)
        if args.json:
            atomic_write_json(args.json, {"args": vars(args), "rows": rows})
        if args.sheet and len(pictures) <= args.sheet_rows:
            save_sheet(args.sheet, pictures)
    return {k: summary(v) for k, v in rows.items() if v}


def tables(paths: list[str], compact: bool = False, first: int | None = None) -> None:
    """Markdown tables of the rows of several runs' JSONs (a run in parts), each drawing counted once per key
    (``mode/variant``; the ``default`` of a later commit named by its settings in the docs); ``compact``: one
    table, a row per key over all its drawings; ``first``: the drawings before this index only."""
    merged: dict[str, dict[int, dict]] = {}
    for path in paths:
        for key, rows in json.loads(Path(path).read_text())["rows"].items():
            merged.setdefault(key, {}).update({r["index"]: r for r in rows if first is None or r["index"] < first})
    head = (
        "| {} | n | in place | outline kept | IoU mean | attribute | other unchanged | "
        "background PSNR mean (min), ≥ 35 dB | reconstruction PSNR mean (min) |\n|---|---|---|---|---|---|---|---|---|"
    )
    if compact:
        print(head.format("settings"))
    for key, by_index in merged.items():
        if not compact:
            print(f"\n{key}: drawings {min(by_index)}–{max(by_index)}\n\n{head.format('rows')}")
        for name, r in summary(list(by_index.values())).items():
            if compact and name != "all":
                continue
            other = "–" if r["other_unchanged"] is None else f"{r['other_unchanged']:.2f}"
            background = (
                f"{r['background_psnr_mean']:.1f} ({r['background_psnr_min']:.1f}), {r['background_at_35']:.2f}"
            )
            print(
                f"| {key if compact else name} | {r['n']} | {r['in_place']:.2f} | {r['outline_kept']:.2f} | "
                f"{r['iou_mean']:.2f} | {r['attribute_right']:.2f} | {other} | {background} | "
                f"{r['psnr_mean']:.1f} ({r['psnr_min']:.1f}) |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="drawings (each one colour swap)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0, help="skip the drawings before this one (a run in parts)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["default"])
    parser.add_argument("--null-text-steps", type=int, default=10)
    parser.add_argument("--tolerance", type=float, default=1.5)
    parser.add_argument("--cache", help="a folder keeping the inversions between runs")
    parser.add_argument("--cost", type=int, default=0, help="interleaved repeats of the cost jobs (0: skip)")
    parser.add_argument("--cost-tune", type=int, nargs="*", default=[], help="with --cost: tuned edits of N steps too")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sheet", help="a PNG of the first drawings and their edits")
    parser.add_argument("--sheet-rows", type=int, default=20)
    parser.add_argument("--json", help="write the rows (after each drawing) and the summary here")
    parser.add_argument("--tables", nargs="+", help="print the tables of these runs' JSONs (merged) and stop")
    parser.add_argument("--compact", action="store_true", help="with --tables: one row per mode/variant")
    parser.add_argument("--first", type=int, help="with --tables: the drawings before this index only")
    args = parser.parse_args()
    if args.tables:
        return tables(args.tables, args.compact, args.first)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    from crossattn.models.loading import load_pipeline

    pipe = load_pipeline()
    pipe.set_progress_bar_config(disable=True)
    report = {"summary": run(pipe, args) if args.n else {}}
    if args.cost:
        drawing = drawing_set(1, args.seed)[0]
        report["cost_seconds"] = cost(
            pipe, drawing, colour_swap(drawing, 0, args.seed), args.cost, tuple(args.cost_tune)
        )
    print(json.dumps(report, indent=1))
    if args.json:
        rows = json.loads(Path(args.json).read_text())["rows"] if args.n else {}
        atomic_write_json(args.json, {"args": vars(args), **report, "rows": rows})


if __name__ == "__main__":
    main()
