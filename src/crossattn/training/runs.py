"""The training run folder: its layout, the refusal to clobber a run, and checkpoint bookkeeping.

```
RUN/config.json                  model + training config (+ how it was launched)
RUN/log.jsonl                    one JSON line per logged step: loss, lr, samples/s
RUN/checkpoints/step-000250/     accelerate ``save_state`` (models, optimizer, EMA, LR, data position)
RUN/samples/step-000250.png      sample grid (EMA weights) + .json with prompts and seeds
RUN/final/                       the trained pipeline folder (``crossattn generate --model RUN/final``)
RUN/snapshots/minute-010/        the EMA weights at that minute of training (``snapshot_minutes``), as final
```

Checkpoints are written to a hidden temp folder and renamed into place, so a crash mid-write leaves
the previous checkpoint as the latest one; hidden folders are never taken for checkpoints.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..files import atomic_write_text

CHECKPOINT_RE = re.compile(r"^step-(\d{6,})$")


@dataclass(frozen=True)
class RunDir:
    """Paths of one run and the operations on them (all file work happens on the main process)."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def log(self) -> Path:
        return self.root / "log.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def final(self) -> Path:
        return self.root / "final"

    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    def snapshot(self, minute: float) -> Path:
        """Where the EMA weights at ``minute`` of the training clock go (``minute-010``, ``minute-007.5``)."""
        label = f"{minute:05.1f}" if minute % 1 else f"{int(minute):03d}"
        return self.snapshots / f"minute-{label}"

    def artefacts(self) -> list[Path]:
        """What a run writes; any of them existing means the folder holds a run."""
        return [
            self.config,
            self.log,
            self.checkpoints,
            self.samples,
            self.final,
            self.snapshots,
            self.root / "tensorboard",
        ]

    def holds_run(self) -> bool:
        return any(p.exists() for p in self.artefacts())

    def check_new(self, overwrite: bool) -> None:
        """Refuse to start a new run over an old one unless ``overwrite``."""
        if self.holds_run() and not overwrite:
            found = ", ".join(p.name for p in self.artefacts() if p.exists())
            raise FileExistsError(
                f"{self.root} already holds a run ({found}); pass --resume latest to continue it "
                "or --overwrite to start over"
            )

    def clear(self) -> None:
        """Remove the run's own artefacts (never other files the user keeps in the folder)."""
        for path in self.artefacts():
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()

    # ------------------------------------------------------------------ checkpoints

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:06d}"

    def list_checkpoints(self) -> list[tuple[int, Path]]:
        """Complete checkpoints, oldest first (temp folders of interrupted writes, and checkpoints being
        deleted, are hidden)."""
        if not self.checkpoints.is_dir():
            return []
        found = [(CHECKPOINT_RE.match(p.name), p) for p in self.checkpoints.iterdir() if p.is_dir()]
        return sorted((int(m.group(1)), p) for m, p in found if m)

    def resolve_resume(self, resume: str) -> Path | None:
        """``latest`` → the newest checkpoint, or None (start from step 0) when the run was stopped before
        its first one; else a checkpoint folder path. Clear error if the folder holds nothing to go on."""
        if resume == "latest":
            found = self.list_checkpoints()
            if found:
                return found[-1][1]
            if not self.root.is_dir():
                raise FileNotFoundError(f"--resume latest: {self.root} holds no run; start the run without --resume")
            warnings.warn(
                f"--resume latest: no checkpoint in {self.root} yet; starting the run from step 0", stacklevel=2
            )
            return None
        path = Path(resume)
        if not (path.is_dir() and CHECKPOINT_RE.match(path.name)):
            raise FileNotFoundError(
                f"--resume {resume}: not a checkpoint folder (expected 'latest' or .../step-NNNNNN)"
            )
        return path

    def temp_checkpoint(self, step: int) -> Path:
        """Where a checkpoint is written before it is renamed into place (same name on every process)."""
        return self.checkpoints / f".step-{step:06d}.tmp"

    def publish_checkpoint(self, step: int, keep: int) -> Path:
        """Rename the finished temp folder into place, then delete all but the newest ``keep``."""
        target = self.checkpoint(step)
        if target.exists():  # the same step saved again (after a resume): replace it
            _delete_hidden(target)
        os.replace(self.temp_checkpoint(step), target)
        for _, path in self.list_checkpoints()[:-keep]:
            _delete_hidden(path)
        return target

    def remove_stale_temps(self) -> None:
        """Delete what a process killed mid-write left: hidden temp checkpoints, and the hidden temp files and
        folders of :func:`crossattn.files.atomic_write` / ``atomic_dir`` (final, prior, snapshots, samples)."""
        stale = [*self.checkpoints.glob(".step-*"), *self.samples.glob(".step-*"), *self.snapshots.glob(".minute-*")]
        stale += [p for name in ("final", "prior", "config", "log") for p in self.root.glob(f".{name}.*")]
        for path in stale:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ log

    def truncate_log(self, step: int) -> None:
        """Drop log lines after ``step`` (written by the part of a run a resume repeats)."""
        if not self.log.is_file():
            return
        lines = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        kept = [line for line in lines if (at := _step_of(line)) is not None and at <= step]
        atomic_write_text(self.log, "".join(line + "\n" for line in kept))

    def append_log(self, record: dict) -> None:
        with open(self.log, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


def _delete_hidden(checkpoint: Path) -> None:
    """Delete a checkpoint folder, renamed to a hidden name first: a kill mid-delete leaves no half
    checkpoint that ``--resume latest`` would take for a whole one (setup clears the hidden rest)."""
    old = checkpoint.with_name(f".{checkpoint.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(checkpoint, old)
    shutil.rmtree(old, ignore_errors=True)


def _step_of(line: str) -> int | None:
    """The step of one log line; None for a blank line or a torn one (the process was killed mid-append)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record.get("step", 0) if isinstance(record, dict) else None
