"""Golden outputs of the default model: a change that moves one pixel or one map value says so.

``crossattn generate`` and ``crossattn maps`` run in-process on the shipped model for fixed prompts
and seeds; the SHA-256 of every image file and of every map tensor must equal the digests in
``tests/golden/default_model.json`` (the PNGs themselves lie beside it, to look at when a digest
moves). Floating-point results can differ between CPU instruction sets, so the digests are checked on
the CPU capability and torch version they were made with and the test is skipped, saying why, elsewhere.

Refresh after a change that is meant to move outputs (and say so in the commit)::

    CROSSATTN_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from crossattn.cli import main

GOLDEN = Path(__file__).parent / "golden"
DIGESTS = GOLDEN / "default_model.json"
UPDATE = os.environ.get("CROSSATTN_UPDATE_GOLDEN") == "1"

#: (command, prompt, extra flags): one-object, two-object with relation guidance, and maps per step.
CASES = {
    "generate-one": ["generate", "a red circle", "--seed", "3", "--num-images", "2"],
    "generate-relation": ["generate", "a green triangle above a yellow square", "--seed", "11"],
    "maps-relation": ["maps", "a red circle left of a blue square", "--seed", "1", "--per-step"],
}


def machine() -> dict[str, str]:
    """What float results depend on besides the code: the instruction set torch dispatches to, and torch."""
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__}


def digest_folder(folder: Path) -> dict[str, str]:
    """SHA-256 of each PNG's bytes and of each map tensor's bytes (safetensors' header carries no
    values, so the tensors are hashed, named by file and key)."""
    from safetensors.torch import load_file

    digests = {}
    for path in sorted(folder.iterdir()):
        if path.suffix == ".png":
            digests[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.name.endswith(".safetensors"):
            for key, tensor in sorted(load_file(path).items()):
                raw = tensor.contiguous().view(torch.uint8).numpy().tobytes()
                digests[f"{path.name}:{key}"] = hashlib.sha256(raw).hexdigest()
    return digests


@pytest.fixture(scope="module")
def recorded() -> dict:
    if not DIGESTS.exists():
        return {}
    return json.loads(DIGESTS.read_text())


@pytest.mark.parametrize("case", sorted(CASES))
def test_default_model_outputs_are_unchanged(case, recorded, tmp_path):
    out = tmp_path / case
    assert main([*CASES[case], "--out", str(out)]) == 0
    got = digest_folder(out)
    assert got, "the command wrote no PNG and no maps"
    if UPDATE:
        update(case, got, out)
        return
    if recorded.get("machine") != machine():
        pytest.skip(f"golden digests were made on {recorded.get('machine')}; this machine is {machine()}")
    want = recorded["cases"][case]
    moved = sorted(name for name in set(want) | set(got) if want.get(name) != got.get(name))
    assert not moved, f"{case}: these outputs of the default model changed: {moved} (see {GOLDEN / case})"


def update(case: str, got: dict[str, str], out: Path) -> None:
    """Write this case's digests and PNGs (run the cases one process at a time: the file is rewritten)."""
    data = json.loads(DIGESTS.read_text()) if DIGESTS.exists() else {"cases": {}}
    data["machine"] = machine()
    data["cases"][case] = got
    GOLDEN.mkdir(exist_ok=True)
    DIGESTS.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    target = GOLDEN / case
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    for png in out.glob("*.png"):
        shutil.copy(png, target / png.name)
