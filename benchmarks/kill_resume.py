"""Kill and resume: training processes SIGKILLed at random moments end with an uninterrupted run's weights.

For each loop kind (``crossattn train`` on the default model config, ``crossattn finetune`` with LoRA from the
shipped model on a folder of rings, with its prior images and a new word, and ``crossattn train-clip`` on the
default mini-CLIP), one uninterrupted run is made; then ``--kills`` runs (spread over the kinds in turn) are
started as real ``python -m crossattn`` processes and SIGKILLed at a seeded random moment, uniform over the
uninterrupted run's time from its first file in the run folder to its end (so a kill lands in setup, the prior
drawing, a step, a log line or a checkpoint write alike), then resumed with ``--resume latest`` to the end.
Every tensor of ``RUN/final`` and of the last checkpoint (raw weights, EMA) must equal the uninterrupted run's,
bit for bit. Before each kill the process is stopped (SIGSTOP) and the run folder looked at, to count the kills
that landed while a checkpoint was being written.

Prints per kind: kills, resumed bit-identical, not identical, failed to resume (and how many kills landed
mid-checkpoint-write or before the first checkpoint).

    PYTHONPATH=src python benchmarks/kill_resume.py              # 20 kills, seed 0
    PYTHONPATH=src python benchmarks/kill_resume.py --kills 6 --steps 4   # a quicker look
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from crossattn.training.runs import RunDir

SRC = Path(__file__).resolve().parents[1] / "src"
KINDS = ("train", "finetune", "clip")


def ring_folder(folder: Path, n: int = 8) -> Path:
    """``n`` 32x32 red rings on white, captioned "a red ring" ("ring": a word the shipped model does not know)."""
    from PIL import Image

    folder.mkdir(parents=True)
    rows = []
    yy, xx = np.mgrid[:32, :32]
    for i in range(n):
        cx, cy = 12 + i % 4 * 3, 12 + i // 4 * 6
        r = np.hypot(xx - cx, yy - cy)
        image = np.full((32, 32, 3), 255, np.uint8)
        image[(r > 4) & (r < 8)] = (220, 50, 47)
        Image.fromarray(image).save(folder / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "text": "a red ring"})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def command_lines(root: Path, steps: int, threads: int) -> dict:
    """Per kind, ``argv(out)``: the command line of one run into ``out``."""
    common = ["--steps", str(steps), "--checkpoint-every", "2", "--threads", str(threads), "--no-progress"]
    data = ring_folder(root / "rings")
    argvs = {
        "train": ["train", "--batch-size", "4", "--sample-every", "0", "--log-every", "1"],
        "finetune": ["finetune", str(data), "--batch-size", "2", "--no-samples"],
        "clip": ["train-clip", "--batch-size", "8", "--dataset-size", "64", "--sample-every", "0", "--log-every", "1"],
    }
    return {k: (lambda out, a=a: [*a, *common, "--out", str(out)]) for k, a in argvs.items()}


def start(argv: list[str], threads: int) -> subprocess.Popen:
    env = os.environ | {"PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "crossattn", *argv]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_files(proc: subprocess.Popen, out: Path) -> float:
    """Poll until the run folder holds something (or the process ended); the time it did."""
    while proc.poll() is None and not (out.is_dir() and any(out.iterdir())):
        time.sleep(0.002)
    return time.monotonic()


def reference(argv, out: Path, threads: int) -> float:
    """The uninterrupted run; returns its seconds from its first file to its end."""
    proc = start(argv(out), threads)
    first = wait_for_files(proc, out)
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"the uninterrupted run failed: {err[-2000:]}")
    return time.monotonic() - first


def kill_at(argv, out: Path, delay: float, threads: int) -> tuple[str, float]:
    """Start a run, SIGKILL it ``delay`` s after its first file: what it was doing then (or "finished"), and
    the seconds from its first file to the kill (or its end)."""
    proc = start(argv(out), threads)
    first = wait_for_files(proc, out)
    deadline = first + delay
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    if proc.poll() is not None:
        proc.communicate()
        return "finished", time.monotonic() - first
    proc.send_signal(signal.SIGSTOP)
    run = RunDir(out)
    writing = run.checkpoints.is_dir() and any(run.checkpoints.glob(".step-*.tmp"))
    moment = "mid-checkpoint" if writing else ("before-checkpoint" if not run.list_checkpoints() else "between")
    proc.kill()
    proc.communicate()
    return moment, delay


def identical(a: Path, b: Path) -> bool:
    """Every tensor of ``final`` and of the last checkpoint equal, by the suite's own reading of a run."""
    sys.path.insert(0, str(SRC.parent))  # the repository, for the tests package
    from tests.test_kill_resume import weights

    wa, wb = weights(a), weights(b)
    if wa.keys() != wb.keys():
        return False
    return all(wa[n].keys() == wb[n].keys() and all(torch.equal(t, wb[n][k]) for k, t in wa[n].items()) for n in wa)


def one_kill(kind: str, argv, ref: Path, out: Path, fraction: float, span: float, threads: int) -> tuple[str, str]:
    """Kill at ``fraction`` of ``span`` s after the first file, resume, compare: ``(moment, outcome)``, outcome
    identical / different / failed / not killed. A run that ends first (the machine got faster) is started
    again and killed at the same fraction of its own length."""
    for _ in range(3):
        moment, span = kill_at(argv, out, fraction * span, threads)
        if moment != "finished":
            break
        shutil.rmtree(out)
    else:
        return moment, "not killed"
    proc = start([*argv(out), "--resume", "latest"], threads)
    _, err = proc.communicate()
    if proc.returncode != 0:
        print(f"  {kind}: resume failed after a kill ({moment}): {err.strip()[-500:]}", flush=True)
        return moment, "failed"
    return moment, "identical" if identical(ref, out) else "different"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps of each run (checkpoint every 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        argvs = command_lines(root, args.steps, args.threads)
        spans = {k: reference(argvs[k], root / f"whole-{k}", args.threads) for k in KINDS}
        print("uninterrupted runs, first file to end: " + ", ".join(f"{k} {s:.1f} s" for k, s in spans.items()))
        rows = {
            k: {"kills": 0, "identical": 0, "different": 0, "failed": 0, "mid-checkpoint": 0, "before": 0}
            for k in KINDS
        }
        for i in range(args.kills):
            kind = KINDS[i % len(KINDS)]
            fraction = rng.random()
            ref, out = root / f"whole-{kind}", root / f"kill-{i}"
            moment, outcome = one_kill(kind, argvs[kind], ref, out, fraction, spans[kind], args.threads)
            print(f"kill {i + 1:2d}: {kind:8s} at {fraction:4.0%} of the run ({moment}): {outcome}", flush=True)
            if outcome == "not killed":
                continue
            row = rows[kind]
            row["kills"] += 1
            row[outcome] += 1
            row["mid-checkpoint"] += moment == "mid-checkpoint"
            row["before"] += moment == "before-checkpoint"
        print_table(rows)


def print_table(rows: dict) -> None:
    head = ("loop", "kills", "bit-identical", "not identical", "failed to resume", "mid-ckpt-write", "before-1st-ckpt")
    print("\n" + " | ".join(head))
    for kind, r in rows.items():
        cells = (kind, r["kills"], r["identical"], r["different"], r["failed"], r["mid-checkpoint"], r["before"])
        print(" | ".join(str(c) for c in cells))


if __name__ == "__main__":
    main()
