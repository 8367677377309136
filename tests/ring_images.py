"""Four red rings captioned "a red ring": the fine-tuning data of the SD3 / Flux tests (``test_finetune_flow.py``)
and of ``benchmarks/finetune_flow.py``, in one place."""

from __future__ import annotations

import json
from pathlib import Path


def ring_folder(folder: Path, side: int) -> Path:
    """Write four ``side``×``side`` red rings at two offsets, each captioned "a red ring", as an image folder with
    ``metadata.jsonl`` in ``folder`` (created); returns it."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rows, s = [], side // 16
    for i in range(4):
        image = np.full((side, side, 3), 255, np.uint8)  # (H, W, 3) white
        image[3 * s + i % 2 : 13 * s, 3 * s : 13 * s] = (220, 50, 47)
        image[6 * s : 10 * s, 6 * s : 10 * s] = 255
        Image.fromarray(image).save(folder / f"{i}.png")
        rows.append(json.dumps({"file_name": f"{i}.png", "text": "a red ring"}) + "\n")
    (folder / "metadata.jsonl").write_text("".join(rows))
    return folder
