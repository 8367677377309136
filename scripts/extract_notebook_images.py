"""Write chosen notebook output pictures to docs/img/ as PNG files (the README's and the docs' gallery).

Run after re-executing the notebooks: ``python scripts/extract_notebook_images.py``.
A picture is named by its notebook, a piece of its cell's source, and which PNG of that cell it is.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: output file → (notebook, text in the cell's source, index among the cell's PNG outputs)
PICTURES = {
    "word_overlays.png": ("01_cross_attention_maps.ipynb", "word maps over the generated image", 0),
    "layer_word_grid.png": ("01_cross_attention_maps.ipynb", "viz.layer_word_grid(maps, WORDS)", 0),
    "edit.png": ("04_attention_control.ipynb", 'SOURCE, TARGET, SEED = "a green circle below', 0),
    "ring_finetune.png": ("03_finetune_small_dataset.ipynb", '(("before", base), ("after", tuned))', 0),
    "ring_validation_strips.png": ("03_finetune_small_dataset.ipynb", "def validation_maps", 0),
}


def cell_pngs(notebook: Path, needle: str) -> list[bytes]:
    """The PNG outputs of the one code cell whose source contains ``needle``."""
    cells = [c for c in json.loads(notebook.read_text())["cells"] if needle in "".join(c["source"])]
    if len(cells) != 1:
        raise ValueError(f"{notebook.name}: {len(cells)} cells contain {needle!r}; expected exactly one")
    outputs = cells[0].get("outputs", [])
    return [base64.b64decode(o["data"]["image/png"]) for o in outputs if "image/png" in o.get("data", {})]


def main() -> None:
    out = ROOT / "docs" / "img"
    out.mkdir(parents=True, exist_ok=True)
    for name, (notebook, needle, index) in PICTURES.items():
        pngs = cell_pngs(ROOT / "notebooks" / notebook, needle)
        if index >= len(pngs):
            raise ValueError(f"{notebook}: the cell with {needle!r} has {len(pngs)} pictures, not {index + 1}")
        (out / name).write_bytes(pngs[index])
        print(f"docs/img/{name} <- {notebook}")


if __name__ == "__main__":
    main()
