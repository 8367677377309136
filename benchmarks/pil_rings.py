"""A user's ring folder drawn by another renderer than ``crossattn export``: Pillow's outlined
ellipses (thin bands, 1.5–2.2 px at 32×32, against the scenes module's filled annulus whose band is half
the radius), antialiased by drawing at 4× and downsampling, with a position in a third of the captions.

    python benchmarks/pil_rings.py OUT [--n 48] [--seed 0]

The ring benchmark (``ring_finetune.py --renderer pil``) fine-tunes on such a folder, so the new-word
acceptance is not measured on pictures of the very kind the analyzer was written for.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from crossattn.data.captions import COLOURS, POSITIONS, format_caption, margin_for

SCALE = 4  # drawn at 4x, then downsampled (antialiasing)


def ring_image(rng: np.random.Generator, colour: str, position: str | None, resolution: int = 32) -> np.ndarray:
    """One thin outlined ring, (H, W, 3) uint8, its centre at ``position`` (grammar's margins) or anywhere."""
    from PIL import Image, ImageDraw

    radius = rng.uniform(5.0, 7.5)
    width = rng.uniform(1.5, 2.2)
    mid, margin = resolution / 2, margin_for(resolution) + 1.0
    low, high = radius + 1.0, resolution - radius - 1.0
    if position is None:
        centre = rng.uniform(low, high, size=2)
    elif position == "center":
        centre = rng.uniform(mid - margin + 2, mid + margin - 2, size=2)
    else:
        vertical, horizontal = position.split()
        x = rng.uniform(low, mid - margin) if horizontal == "left" else rng.uniform(mid + margin, high)
        y = rng.uniform(low, mid - margin) if vertical == "top" else rng.uniform(mid + margin, high)
        centre = np.array([x, y])
    big = Image.new("RGB", (resolution * SCALE, resolution * SCALE), "white")
    box = [float(v) * SCALE for v in (centre[0] - radius, centre[1] - radius, centre[0] + radius, centre[1] + radius)]
    ImageDraw.Draw(big).ellipse(box, outline=COLOURS[colour], width=max(1, round(width * SCALE)))
    return np.asarray(big.resize((resolution, resolution), Image.LANCZOS))


def write_pil_rings(out: str | Path, n: int = 48, seed: int = 0, resolution: int = 32) -> Path:
    """``n`` captioned thin rings as an image folder (``metadata.jsonl``), a third of them with a position."""
    from crossattn.data.folder import new_image_folder

    rng = np.random.default_rng([seed, 0x9111])
    with new_image_folder(out) as folder:
        for i in range(n):
            colour = str(rng.choice(list(COLOURS)))
            position = str(rng.choice(POSITIONS)) if i % 3 == 2 else None
            folder.add(ring_image(rng, colour, position, resolution), format_caption([(colour, "ring")], position))
    return Path(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="new image folder")
    parser.add_argument("--n", type=int, default=48, help="images (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(write_pil_rings(args.out, args.n, args.seed))


if __name__ == "__main__":
    main()
