"""Two measurements taken side by side in one run: rounds that alternate which goes first (A, B, B, A,
...), so load from other processes on a shared machine that drifts during the run hits both alike.
Used by ``train_throughput.py`` and ``finetune_throughput.py``. Not a benchmark itself."""

from __future__ import annotations

import statistics
from collections.abc import Callable


def alternate(runs: dict[str, Callable[[], list[float]]], rounds: int, unit: str) -> dict[str, list[float]]:
    """Call each of ``runs`` once per round, in turn, the order flipped every round; each call returns its
    measurements with a warm-up first, which is dropped. Prints each call's median; returns every
    measurement per name."""
    kept: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(rounds):
        for name in list(runs)[:: 1 if r % 2 == 0 else -1]:
            values = runs[name]()[1:]  # the first (warm-up) dropped
            kept[name].extend(values)
            print(f"round {r + 1} {name}: median {statistics.median(values):.3f} {unit}", flush=True)
    return kept
