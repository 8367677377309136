"""Edit consistency: does prompt-to-prompt control keep the layout and change the word? (Issue 17.)

``--n`` seeded edits on the default model, relation guidance off, a quarter each of: one-object
colour swaps ("a red circle" → "a blue circle"), one-object shape swaps, two-object colour swaps and
two-object shape swaps (relations left of / right of / above / below / and in turn; the swapped
object drawn at random). Each edit is one :func:`crossattn.edit` call: source, ``.plain`` (the
target from the same noise, no control) and ``.edited``, judged side by side by the scene analyzer:

- layout kept: the edited (or plain) image has as many objects as the source and, under the best
  one-to-one pairing, every object's centroid lies within ``--tolerance`` px (1.5) of its source's;
- attribute right: the target's swapped object is found with the target's colour and shape
  (one-object: the main object is exactly it; two-object: the analyzer matches it).

Acceptance (issue 17): with control (``crossattn.edit``'s defaults unless flags say otherwise),
layout kept in ≥ 90 % of edits and attribute right in ≥ 90 %.
Cost, timed interleaved in the same run (medians of wall and of process CPU time): an edit (three
rows: source, edited, plain; two during the shared steps) and an edit without ``.plain`` against two
plain samplings (source, then target).

    python benchmarks/edit_consistency.py [--n 100] [--cross-steps 0.8] [--self-steps 0.2]
        [--shared-steps 0.5] [--no-blend] [--threads 1] [--json PATH]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time

import numpy as np
import torch

from crossattn.data.captions import COLOURS, RELATIONS, SHAPES, format_caption
from crossattn.editing.prompt_edit import EditSettings, edit
from crossattn.evaluation import check_caption
from crossattn.models.loading import load_pipeline

STREAM = 0xED17
SEED_BASE = 2_000_000  # noise seeds far from training-time sample grids and the eval set
KINDS = ("one/colour", "one/shape", "two/colour", "two/shape")


def edit_pairs(n: int, seed: int) -> list[dict]:
    """``n`` seeded (source, target) caption pairs, the four kinds in turn."""
    rng = np.random.default_rng([seed, STREAM])
    pick = lambda options, avoid=None: str(rng.choice([o for o in options if o != avoid]))  # noqa: E731
    pairs = []
    for i in range(n):
        kind = KINDS[i % 4]
        count, attribute = kind.split("/")
        objects = [(pick(COLOURS), pick(SHAPES))]
        if count == "two":
            second = (pick(COLOURS), pick(SHAPES))
            while second == objects[0]:
                second = (pick(COLOURS), pick(SHAPES))
            objects.append(second)
        slot = int(rng.integers(len(objects)))
        new = list(objects)
        while new == objects or len(set(new)) < len(new):  # a real swap, the two objects still distinct
            colour, shape = objects[slot]
            new[slot] = (pick(COLOURS, colour), shape) if attribute == "colour" else (colour, pick(SHAPES, shape))
        relation = RELATIONS[(i // 4) % len(RELATIONS)] if count == "two" else None
        source, target = format_caption(objects, relation=relation), format_caption(new, relation=relation)
        pairs.append({"kind": kind, "source": source, "target": target, "slot": slot, "seed": SEED_BASE + i})
    return pairs


def centroids(check) -> list[tuple[float, float]]:
    return [o.centroid for o in check.objects]


def layout_shift(source: list, other: list) -> float:
    """Largest centroid distance under the best one-to-one pairing; inf when the counts differ."""
    if len(source) != len(other) or not source:
        return float("inf")
    best = min(
        max(float(np.hypot(a[0] - b[0], a[1] - b[1])) for a, b in zip(source, perm, strict=True))
        for perm in itertools.permutations(other)
    )
    return best


def attribute_right(check, slot: int) -> bool:
    if len(check.spec.objects) == 1:
        return bool(check.results["object"])
    return check.matches[slot] is not None


def judge(pair: dict, result) -> dict:
    arrays = {name: np.asarray(getattr(result, name)) for name in ("source", "plain", "edited")}
    source = check_caption(arrays["source"], pair["source"])
    row = {**pair, "source_right": attribute_right(source, pair["slot"])}
    for name in ("plain", "edited"):
        check = check_caption(arrays[name], pair["target"])
        row[f"{name}_shift"] = layout_shift(centroids(source), centroids(check))
        row[f"{name}_attribute"] = attribute_right(check, pair["slot"])
    return row


def summary(rows: list[dict], tolerance: float) -> dict:
    out = {}
    for group in ("all", *KINDS):
        chosen = [r for r in rows if group == "all" or r["kind"] == group]
        entry = {"n": len(chosen), "source_right": float(np.mean([r["source_right"] for r in chosen]))}
        for name in ("plain", "edited"):
            shifts = [r[f"{name}_shift"] for r in chosen]
            entry[name] = {
                "layout_kept": float(np.mean([s <= tolerance for s in shifts])),
                "attribute_right": float(np.mean([r[f"{name}_attribute"] for r in chosen])),
                "median_shift_px": float(np.median(shifts)),
            }
        out[group] = entry
    return out


def time_cost(pipe, pair: dict, settings: EditSettings, steps: int, guidance: float, repeats: int) -> dict:
    """Medians (s) of an edit with and without ``.plain`` and of two plain samplings, interleaved."""
    common = dict(num_inference_steps=steps, guidance_scale=guidance)

    def gen():
        return torch.Generator().manual_seed(pair["seed"])

    def two_plain():
        for prompt in (pair["source"], pair["target"]):
            pipe(prompt, generator=gen(), relation_guidance=0, **common)

    runs = {
        "two_plain": two_plain,
        "edit": lambda: edit(pipe, pair["source"], pair["target"], generator=gen(), **vars(settings), **common),
        "edit_no_plain": lambda: edit(
            pipe, pair["source"], pair["target"], generator=gen(), plain=False, **vars(settings), **common
        ),
    }
    times = {name: [] for name in runs}
    cpu = {name: [] for name in runs}  # process CPU seconds: what a loaded machine disturbs least
    for _ in range(repeats):
        for name, run in runs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    medians = {name: statistics.median(t) for name, t in times.items()}
    cpu_medians = {name: statistics.median(t) for name, t in cpu.items()}
    return {
        **{f"{k}_s": round(v, 3) for k, v in medians.items()},
        "edit_ratio": medians["edit"] / medians["two_plain"],
        "edit_no_plain_ratio": medians["edit_no_plain"] / medians["two_plain"],
        "edit_cpu_ratio": cpu_medians["edit"] / cpu_medians["two_plain"],
        "edit_no_plain_cpu_ratio": cpu_medians["edit_no_plain"] / cpu_medians["two_plain"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100, help="edits (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the prompt pairs (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("--cross-steps", type=float, default=EditSettings.cross_steps)
    parser.add_argument("--self-steps", type=float, default=EditSettings.self_steps)
    parser.add_argument("--halves", default=EditSettings.halves, help="both or cond (default: %(default)s)")
    parser.add_argument("--shared-steps", type=float, default=EditSettings.shared_steps)
    parser.add_argument("--no-blend", dest="blend", action="store_false", help="no local blending (default: on)")
    parser.add_argument("--tolerance", type=float, default=1.5, help="layout tolerance, px (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats; 0 skips timing (default: 5)")
    parser.add_argument("--model", default=None, help="pipeline folder (default: the shipped model)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", metavar="PATH", help="also write every edit's numbers here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    settings = EditSettings(args.cross_steps, args.self_steps, {}, args.halves, args.blend, args.shared_steps)
    rows, start = [], time.perf_counter()
    for pair in edit_pairs(args.n, args.seed):
        gen = torch.Generator().manual_seed(pair["seed"])
        result = edit(pipe, pair["source"], pair["target"], generator=gen, num_inference_steps=args.steps,
                      guidance_scale=args.guidance, **vars(settings))  # fmt: skip
        rows.append(judge(pair, result))
        print(pair["kind"], pair["source"], "->", pair["target"], {k: v for k, v in rows[-1].items() if "_" in k})
    report = {"settings": {**vars(args), **vars(settings)}, "seconds": round(time.perf_counter() - start, 1)}
    report["summary"] = summary(rows, args.tolerance)
    if args.repeats:
        report["cost"] = time_cost(pipe, edit_pairs(1, args.seed)[0], settings, args.steps, args.guidance, args.repeats)
    print_report(report)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({**report, "edits": rows}, fh, indent=1)


def print_report(report: dict) -> None:
    s = report["settings"]
    print(f"{report['summary']['all']['n']} edits, cross_steps {s['cross_steps']}, self_steps {s['self_steps']}, "
          f"halves {s['halves']}, blend {s['blend']}, shared_steps {s['shared_steps']}, {s['steps']} steps, guidance {s['guidance']}, {report['seconds']} s")  # fmt: skip
    print(f"{'group':<12}{'n':>4}  {'source ok':>9}  {'layout plain':>12} {'edited':>7}  "
          f"{'attribute plain':>15} {'edited':>7}  {'median shift plain':>18} {'edited':>7}")  # fmt: skip
    for group, e in report["summary"].items():
        p, d = e["plain"], e["edited"]
        print(f"{group:<12}{e['n']:>4}  {e['source_right']:>9.2f}  {p['layout_kept']:>12.2f} {d['layout_kept']:>7.2f}  "
              f"{p['attribute_right']:>15.2f} {d['attribute_right']:>7.2f}  "
              f"{p['median_shift_px']:>18.2f} {d['median_shift_px']:>7.2f}")  # fmt: skip
    if "cost" in report:
        c = report["cost"]
        print(f"cost (medians): two plain samplings {c['two_plain_s']} s, edit {c['edit_s']} s "
              f"({c['edit_ratio']:.2f}x), edit without .plain {c['edit_no_plain_s']} s "
              f"({c['edit_no_plain_ratio']:.2f}x); in CPU time {c['edit_cpu_ratio']:.2f}x and "
              f"{c['edit_no_plain_cpu_ratio']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
