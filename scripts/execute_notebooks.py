"""Execute the notebooks top to bottom and save them with their outputs, timing each one.

The notebooks run on the default model (``crossattn.load_pipeline()``); re-run this after it changes
so the committed pictures match it. ``--fast`` sets ``CROSSATTN_NOTEBOOK_FAST=1`` (CI's reduced
settings); ``--check`` executes without writing the outputs back. The kernel gets this tree's
``src`` first on ``PYTHONPATH``, so it imports the code beside the notebooks.

    PYTHONPATH=src python scripts/execute_notebooks.py                  # all, full settings, saved
    PYTHONPATH=src python scripts/execute_notebooks.py --fast --check notebooks/01_cross_attention_maps.ipynb
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
FAST_ENV = "CROSSATTN_NOTEBOOK_FAST"


def kernel_env(fast: bool) -> dict[str, str]:
    """The environment the kernel starts with: this tree's ``src`` first, the fast switch set or cleared."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if p)
    env[FAST_ENV] = "1" if fast else "0"
    if fast:  # CI: one thread, as the notebooks set for themselves (two spin against a loaded 2-core CPU)
        env["OMP_NUM_THREADS"] = "1"
    return env


def execute(path: Path, fast: bool, timeout: int = 600):
    """Run every cell of ``path`` in a fresh ``python3`` kernel (cwd: the notebook's folder).

    Returns the executed notebook and the seconds it took; a failing cell raises
    ``nbclient.exceptions.CellExecutionError`` naming the cell and the error."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        record_timing=False,  # no timestamps in the saved file: re-runs diff cleanly
        shutdown_kernel="immediate",  # the outputs are in: kill the kernel, no ~0.6 s graceful teardown
    )
    start = time.perf_counter()
    client.execute(env=kernel_env(fast))
    return nb, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks to run (default: notebooks/*.ipynb)")
    parser.add_argument("--fast", action="store_true", help=f"reduced settings ({FAST_ENV}=1), as in CI")
    parser.add_argument("--check", action="store_true", help="execute only; do not write the outputs back")
    parser.add_argument("--timeout", type=int, default=600, help="seconds one cell may run (default: %(default)s)")
    args = parser.parse_args()
    import nbformat

    for path in args.notebooks or sorted(NOTEBOOKS.glob("*.ipynb")):
        nb, seconds = execute(path.resolve(), args.fast, args.timeout)
        if not args.check:
            nbformat.write(nb, path)
        print(f"{path.name}: {seconds:.1f} s ({'fast' if args.fast else 'full'} settings)", flush=True)


if __name__ == "__main__":
    main()
