"""Speedrun: time to quality of ``crossattn train --recipe speedrun`` on this machine.

1. Trains with the recipe (its wall-clock budget, 60 minutes; data generation and everything else
   on the clock) in a subprocess, with the threads given (default: 2, all cores here).
2. Off the clock, evaluates the EMA snapshots the run wrote at minutes 10, 20, 30, 45 and 60
   (``RUN/snapshots/minute-MMM``) with ``crossattn eval --n N``, relation guidance on (the default) and
   off (the model alone).
3. Writes ``RUN/speedrun.md`` (the time-to-quality table, bars marked) and ``RUN/speedrun.png``
   (every category against minutes).

    python benchmarks/speedrun.py --out runs/speed --seed 0
    python benchmarks/speedrun.py --out runs/speed --eval-only --n 100     # re-evaluate a run
    python benchmarks/speedrun.py --out runs/speed --eval-only --also runs/speed-s1  # two seeds, one plot
    python benchmarks/speedrun.py --out runs/speed2 -- --lr 2e-3           # flags after -- go to train

Bars (issue 26): one object colour / shape / position >= 0.95, two objects both right >= 0.90,
relation >= 0.95 with guidance (>= 0.80 without: the stretch), grounding IoU >= 0.75.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from crossattn.training.runs import RunDir

#: (column, report path, bar): what the table and the plot show per snapshot.
COLUMNS = (
    ("colour", ("on", "accuracy", "one.colour"), 0.95),
    ("shape", ("on", "accuracy", "one.shape"), 0.95),
    ("position", ("on", "accuracy", "one.position"), 0.95),
    ("both right", ("on", "accuracy", "two.both"), 0.90),
    ("relation (guided)", ("on", "accuracy", "two.relation"), 0.95),
    ("relation (alone)", ("off", "accuracy", "two.relation"), 0.80),
    ("IoU colour", ("on", "grounding", "colour"), 0.75),
    ("IoU shape", ("on", "grounding", "shape"), 0.75),
)


def crossattn(*args: str) -> list[str]:
    return [sys.executable, "-m", "crossattn", *args]


def train(out: Path, seed: int, threads: int, extra: list[str]) -> float:
    """The recipe's run in a subprocess; returns its wall seconds (start-up included)."""
    cmd = crossattn("train", "--recipe", "speedrun", "--out", str(out), "--seed", str(seed))
    cmd += ["--data-seed", str(seed), "--threads", str(threads), "--no-progress", *extra]
    print(" ".join(cmd), flush=True)
    tick = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - tick


def evaluate(snapshot: Path, n: int, threads: int, guided: bool, device: str = "cpu") -> dict:
    """``crossattn eval`` of one snapshot (reused when its report exists for the same ``n``)."""
    out = snapshot / f"eval-{'on' if guided else 'off'}-n{n}"
    report = out / "report.json"
    if not report.is_file():
        cmd = crossattn("eval", "--model", str(snapshot), "--n", str(n), "--out", str(out), "--threads", str(threads))
        cmd += ["--device", device]
        if not guided:
            cmd += ["--relation-guidance", "0"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads(report.read_text())


def value(reports: dict, path: tuple[str, str, str]) -> float | None:
    guided, table, key = path
    row = (reports[guided].get(table) or {}).get(key) if reports.get(guided) else None
    if row is None:
        return None
    return row.get("accuracy", row.get("mean_iou"))


def snapshot_rows(run: Path, n: int, threads: int, unguided: str = "all", device: str = "cpu") -> list[dict]:
    """One row per snapshot: its minute, step, and every column's value (relation guidance off only
    at the last snapshot with ``unguided="last"``: an evaluation costs minutes on this CPU)."""
    folders = snapshot_folders(run)
    steps = {minute: step for minute, (step, _) in folders.items()}
    rows = []
    for minute, (step, folder) in sorted(folders.items()):
        last = minute == max(steps)
        reports = {"on": evaluate(folder, n, threads, True, device)}
        reports["off"] = evaluate(folder, n, threads, False, device) if unguided == "all" or last else {}
        row = {"minute": minute, "step": step, **{name: value(reports, path) for name, path, _ in COLUMNS}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def snapshot_folders(run: Path) -> dict[float, tuple[int, Path]]:
    """minute → (step, pipeline folder) of every snapshot; a run that stopped at its time limit
    without a snapshot there (runs made before the trainer wrote one) counts ``final/`` (the EMA
    weights at its last step) as the snapshot at the limit."""
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    folders = {r["snapshot"]: (r["step"], RunDir(run).snapshot(r["snapshot"])) for r in log if "snapshot" in r}
    limit = json.loads((run / "config.json").read_text())["training"]["time_limit"]
    last_step = max(r["step"] for r in log)
    if (
        limit
        and limit not in folders
        and (run / "final").is_dir()
        and (not folders or last_step > max(s for s, _ in folders.values()))
    ):
        folders[float(limit)] = (last_step, run / "final")
    return folders


def table(rows: list[dict], header: str) -> str:
    """Markdown: minutes down, categories across; a value at or over its bar in bold."""
    names = [name for name, _, _ in COLUMNS]
    lines = [header, "", "| minute | step | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
    lines.append("| bar | | " + " | ".join(f"{bar:.2f}" for _, _, bar in COLUMNS) + " |")
    for row in rows:
        cells = []
        for name, _, bar in COLUMNS:
            v = row[name]
            cells.append("–" if v is None else (f"**{v:.3f}**" if v >= bar else f"{v:.3f}"))
        lines.append(f"| {row['minute']:g} | {row['step']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(runs: dict[str, list[dict]], path: Path, title: str, threads: int) -> None:
    """Every category against minutes, one line style per run (``{label: rows}``); the bars dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 4.8), dpi=120)
    for style, (label, rows) in zip(("o-", "s--", "^-.", ":"), runs.items(), strict=False):
        minutes = [r["minute"] for r in rows]
        for i, (name, _, _) in enumerate(COLUMNS):
            values = [r[name] if r[name] is not None else float("nan") for r in rows]
            ax.plot(minutes, values, style, color=f"C{i}", label=f"{name}" + (f" ({label})" if len(runs) > 1 else ""))
    for i, (_, _, bar) in enumerate(COLUMNS):
        ax.axhline(bar, color=f"C{i}", linestyle=":", linewidth=0.8)
    xlabel = f"minutes of training clock (torch threads: {threads})"
    ax.set(xlabel=xlabel, ylabel="accuracy / IoU", ylim=(0, 1.02), title=title)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes: no point hidden
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/speed"), help="run folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="init, noise and data seed of the run")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training and eval")
    parser.add_argument("--n", type=int, default=300, help="eval prompts per snapshot (default: %(default)s)")
    parser.add_argument("--eval-only", action="store_true", help="evaluate the snapshots of an existing run")
    parser.add_argument("--device", default="cpu", help="torch device of the evaluations (training: accelerate's)")
    parser.add_argument(
        "--unguided", choices=("all", "last"), default="all", help="snapshots evaluated with relation guidance off"
    )
    parser.add_argument(
        "--also", type=Path, nargs="+", default=[], help="other runs (e.g. another seed) evaluated and drawn beside"
    )
    parser.add_argument("train_flags", nargs="*", help="after --: flags passed to crossattn train")
    args = parser.parse_args()
    wall = None
    if not args.eval_only:
        wall = train(args.out, args.seed, args.threads, args.train_flags)
    rows = snapshot_rows(args.out, args.n, args.threads, args.unguided, args.device)
    config = json.loads((args.out / "config.json").read_text())
    launch = config["launch"]
    header = (
        f"Speedrun `{args.out}` ({time.strftime('%Y-%m-%d')}): seed {config['training']['seed']}, "
        f"torch threads {launch['threads']}, eval --n {args.n}"
        + (f", training wall {wall / 60:.1f} min" if wall else "")
    )
    runs = {f"seed {config['training']['seed']}": rows}
    tables = [table(rows, header)]
    for other in args.also:
        seed = json.loads((other / "config.json").read_text())["training"]["seed"]
        runs[f"seed {seed}"] = snapshot_rows(other, args.n, args.threads, args.unguided, args.device)
        tables.append(table(runs[f"seed {seed}"], f"Speedrun `{other}`: seed {seed}, eval --n {args.n}"))
    (args.out / "speedrun.md").write_text("\n".join(tables), encoding="utf-8")
    plot(runs, args.out / "speedrun.png", "speedrun: " + ", ".join(runs), launch["threads"])
    print("\n".join(tables))


if __name__ == "__main__":
    main()
