"""Kill and resume: training processes SIGKILLed at random moments end with an uninterrupted run's weights.

For each loop kind (``crossattn train`` on the default model config, ``crossattn finetune`` with LoRA from the
shipped model on a folder of rings, with its prior images and a new word, and ``crossattn train-clip`` on the
default mini-CLIP), one uninterrupted run is made; then ``--kills`` runs (spread over the kinds in turn) are
started as real ``python -m crossattn`` processes and SIGKILLed at a progress marker read from the run folder,
so every kill lands inside the run (a kill timed by the clock can land after a run that went faster): after the
k-th logged step plus a seeded random part of a step, while a checkpoint is being written (its hidden temp
folder exists; checked again with the process stopped, SIGSTOP), while the final weights are written, while
fine-tuning draws its prior images, or in setup before the first step. Each is resumed with ``--resume latest``
to the end; every tensor of ``RUN/final`` and of the last checkpoint (raw weights, EMA) must equal the
uninterrupted run's, bit for bit.

Prints each kill (its marker, what the run folder showed at the kill, the outcome) and per kind: kills,
resumed bit-identical, not identical, failed to resume, killed mid-write.

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
EVERY = 2  # steps between checkpoints
LOGS_EVERY_STEP = ("train", "clip")  # --log-every 1; finetune has no --log-every: its steps show as checkpoints


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
    common = [
        "--steps",
        str(steps),
        "--checkpoint-every",
        str(EVERY),
        "--threads",
        str(threads),
        "--no-progress",
    ]
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


def reference(argv, out: Path, threads: int) -> float:
    """The uninterrupted run; returns its seconds from start to end."""
    t = time.monotonic()
    proc = start(argv(out), threads)
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"the uninterrupted run failed: {err[-2000:]}")
    return time.monotonic() - t


def logged_steps(log: Path) -> list[int]:
    """The steps of the log's whole lines (a line torn by a write in progress is skipped)."""
    steps = []
    for line in log.read_text(errors="replace").splitlines() if log.is_file() else ():
        try:
            steps.append(int(json.loads(line)["step"]))
        except (ValueError, KeyError, TypeError):
            continue
    return steps


def state(out: Path) -> dict:
    """What the run folder shows now: the last step logged or checkpointed, complete checkpoints, and which hidden temp is
    being written (a checkpoint, the final weights, fine-tuning's prior images), if any."""
    run = RunDir(out)
    steps = [0, *logged_steps(run.log), *(step for step, _ in run.list_checkpoints())]
    temps = [p.name for p in run.checkpoints.glob(".step-*.tmp")] if run.checkpoints.is_dir() else []
    temps += [p.name for p in out.glob(".final.tmp-*")] + [p.name for p in out.glob(".prior.tmp-*")]
    return {
        "step": max(steps),
        "checkpoints": len(run.list_checkpoints()),
        "writing": temps,
        "config": run.config.is_file(),
    }


def reached(marker: tuple[str, int], now: dict) -> bool:
    """Whether the run is at ``marker``: ``("step", k)`` k steps logged; ``("checkpoint", n)`` the checkpoint
    after n complete ones being written; ``("final", 0)`` the final weights being written; ``("prior", 0)``
    fine-tuning's prior images being drawn; ``("setup", 0)`` the run's config.json written, no step logged yet
    (before config.json the folder holds no run: ``--resume latest`` says so and a plain start begins it)."""
    what, k = marker
    writing = " ".join(now["writing"])
    if what == "step":
        return now["step"] >= k
    if what == "checkpoint":
        return ".step-" in writing and now["checkpoints"] == k
    if what in ("final", "prior"):
        return what in writing
    return now["config"] and now["step"] == 0 and (now["checkpoints"], writing) == (0, "")


def kill_at(argv, out: Path, marker: tuple[str, int], extra: float, threads: int) -> str:
    """Start a run; SIGKILL it ``extra`` s after it reaches ``marker`` (checked again with the process stopped,
    SIGSTOP, when ``extra`` is 0). Returns what the run folder showed at the kill, or "finished" when the run
    ended first."""
    proc = start(argv(out), threads)
    deadline = None
    while proc.poll() is None:
        if deadline is None and out.is_dir() and reached(marker, state(out)):
            deadline = time.monotonic() + extra
        if deadline is not None and time.monotonic() >= deadline:
            proc.send_signal(signal.SIGSTOP)
            now = state(out)
            if extra or reached(marker, now):
                proc.kill()
                proc.communicate()
                return f"step {now['step']}, {now['checkpoints']} checkpoints" + "".join(
                    f", writing {w}" for w in now["writing"]
                )
            proc.send_signal(signal.SIGCONT)
        time.sleep(0.001)
    proc.communicate()
    return "finished"


def identical(a: Path, b: Path) -> bool:
    """Every tensor of ``final`` and of the last checkpoint equal, by the suite's own reading of a run."""
    sys.path.insert(0, str(SRC.parent))  # the repository, for the tests package
    from tests.test_kill_resume import weights

    wa, wb = weights(a), weights(b)
    if wa.keys() != wb.keys():
        return False
    return all(wa[n].keys() == wb[n].keys() and all(torch.equal(t, wb[n][k]) for k, t in wa[n].items()) for n in wa)


def one_kill(kind: str, argv, ref: Path, out: Path, marker: tuple[str, int], extra: float, threads: int):
    """Kill at ``marker`` (+ ``extra`` s), resume with ``--resume latest``, compare: ``(moment, outcome)``,
    outcome identical / different / failed / not killed. A run that ends first is started again, killed at the
    marker itself (a short write can be missed between two looks: tried up to 4 times)."""
    for _ in range(4):
        moment = kill_at(argv, out, marker, extra, threads)
        if moment != "finished":
            break
        shutil.rmtree(out)
        extra = 0.0
    else:
        return moment, "not killed"
    proc = start([*argv(out), "--resume", "latest"], threads)
    _, err = proc.communicate()
    if proc.returncode != 0:
        print(f"  {kind}: resume failed after a kill ({moment}): {err.strip()[-500:]}", flush=True)
        return moment, "failed"
    return moment, "identical" if identical(ref, out) else "different"


#: the progress markers each loop is killed at, in turn (a checkpoint every 2 steps)
PLANS = {
    "train": ("step", "checkpoint", "setup", "step", "checkpoint", "final", "step"),
    "finetune": ("prior", "step", "checkpoint", "step", "checkpoint", "final", "step"),
    "clip": ("step", "checkpoint", "setup", "step", "checkpoint", "final", "step"),
}


def markers(rng: random.Random, kills: int, steps: int, every: int, spans: dict) -> list[tuple]:
    """``(kind, marker, extra)`` of each kill: the loops in turn, each through its plan; a step marker k is
    drawn from the steps before the last that the run folder shows (logged, or checkpointed) and its extra delay from 0 .. half a step of the uninterrupted run (so the kill
    lands inside step k + 1 or the checkpoint after it, never after the end), a checkpoint marker from the
    checkpoints before the last."""
    out = []
    for i in range(kills):
        kind = KINDS[i % len(KINDS)]
        what = PLANS[kind][(i // len(KINDS)) % len(PLANS[kind])]
        shown = range(1, steps) if kind in LOGS_EVERY_STEP else range(every, steps, every)  # steps the folder shows
        k = {"step": rng.choice(shown), "checkpoint": rng.randint(0, steps // every - 1)}.get(what, 0)
        extra = rng.uniform(0, 0.5 * spans[kind] / steps) if what == "step" else 0.0
        out.append((kind, (what, k), extra))
    return out


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
        print("uninterrupted runs, start to end: " + ", ".join(f"{k} {s:.1f} s" for k, s in spans.items()))
        rows = {k: {"kills": 0, "identical": 0, "different": 0, "failed": 0, "mid-write": 0} for k in KINDS}
        for i, (kind, marker, extra) in enumerate(markers(rng, args.kills, args.steps, EVERY, spans)):
            ref, out = root / f"whole-{kind}", root / f"kill-{i}"
            moment, outcome = one_kill(kind, argvs[kind], ref, out, marker, extra, args.threads)
            aim = f"{marker[0]} {marker[1]}" + (f" + {extra:.2f} s" if extra else "")
            print(f"kill {i + 1:2d}: {kind:8s} at {aim:18s} -> killed at {moment}: {outcome}", flush=True)
            if outcome == "not killed":
                continue
            row = rows[kind]
            row["kills"] += 1
            row[outcome] += 1
            row["mid-write"] += "writing" in moment
        print_table(rows)


def print_table(rows: dict) -> None:
    head = ("loop", "kills", "bit-identical", "not identical", "failed to resume", "killed mid-write")
    print("\n| " + " | ".join(head) + " |\n" + "|---" * len(head) + "|")
    for kind, r in rows.items():
        cells = (kind, r["kills"], r["identical"], r["different"], r["failed"], r["mid-write"])
        print("| " + " | ".join(str(c) for c in cells) + " |")


if __name__ == "__main__":
    main()
