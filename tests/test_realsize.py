"""``benchmarks/realsize.py --tiny``: the real-size benchmark's code on tiny widths, in this process (its children
are fresh processes; here one child's work is called directly, so the check takes a second or two)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def realsize():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "realsize.py"
    spec = importlib.util.spec_from_file_location("realsize", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["sdxl", "flux1"])
def test_a_tiny_traced_child_records_flat_maps_and_its_peak(realsize, name):
    args = realsize.parse(["--tiny", "--child", "traced", "--configs", name, "--steps", "2"])
    result = realsize.child(name, args)
    assert len(result["traced_s"]) == 2 and len(result["untraced_s"]) == 2
    assert result["bytes"][0] == result["bytes"][-1] > 0  # the maps kept do not grow with the forwards
    assert result["peak_mb"] > 0
    row = realsize.summary({**result, "mode": "untraced"}, result)
    assert row["extra_peak_pct"] == 0 and row["ratio"] > 0
