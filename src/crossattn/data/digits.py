"""scikit-learn's handwritten digits as an image folder: the real-data fine-tuning example (issue 7).

``sklearn.datasets.load_digits`` ships 1,797 real 8×8 scans (UCI optical digits, 43 writers) with
16 grey levels, no download. Each scan becomes dark ink on white like the scenes (ink level
0–16 → grey 255–0), upscaled to the model resolution with bicubic resampling (smooth strokes, not
8×8 blocks), stored as RGB, captioned ``"a handwritten digit seven"``.

A seeded split keeps ``HELD_OUT`` of the scans away from fine-tuning; the evaluation's digit
classifier (``crossattn.evaluation.digits``) trains on the same train split and reports its
accuracy on the held-out one. scikit-learn is imported only when the scans are loaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
INK_LEVELS = 16.0  # load_digits' scale: 0 = paper, 16 = full ink
SCAN_SIZE = 8
HELD_OUT = 0.2  # fraction of scans kept out of fine-tuning and classifier training
SPLIT_STREAM = 0xD161  # numpy seed stream of the split, apart from every other seeded draw
SPLITS = ("train", "held_out", "all")


def digit_caption(digit: int) -> str:
    """``"a handwritten digit seven"`` for 7."""
    if not 0 <= int(digit) <= 9:
        raise ValueError(f"digit {digit!r} is not one of 0–9")
    return f"a handwritten digit {DIGIT_WORDS[int(digit)]}"


def load_scans() -> tuple[np.ndarray, np.ndarray]:
    """All scans ``(1797, 8, 8)`` float ink levels 0–16 and their labels ``(1797,)`` int."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError("the digits example needs scikit-learn: pip install 'crossattn[dev]'") from err
    data = load_digits()
    return data.images.astype(np.float32), data.target.astype(np.int64)


def split_indices(n: int, seed: int = 0, held_out: float = HELD_OUT) -> dict[str, np.ndarray]:
    """A seeded permutation of ``range(n)`` cut into ``train`` and ``held_out`` (sorted indices)."""
    if not 0.0 < held_out < 1.0:
        raise ValueError(f"held_out must be a fraction between 0 and 1, got {held_out}")
    order = np.random.default_rng([seed, SPLIT_STREAM]).permutation(n)
    cut = round(n * held_out)
    return {"train": np.sort(order[cut:]), "held_out": np.sort(order[:cut]), "all": np.arange(n)}


def digit_split(split: str = "train", seed: int = 0, held_out: float = HELD_OUT) -> tuple[np.ndarray, np.ndarray]:
    """The scans ``(N, 8, 8)`` and labels ``(N,)`` of ``split`` (train, held_out or all)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
    scans, labels = load_scans()
    index = split_indices(len(scans), seed, held_out)[split]
    return scans[index], labels[index]


def render_scan(scan: np.ndarray, resolution: int = 32) -> np.ndarray:
    """One 8×8 scan (ink 0–16) as dark ink on white, ``(resolution, resolution, 3)`` uint8 RGB."""
    from PIL import Image

    grey = np.clip(np.rint(255.0 * (1.0 - np.asarray(scan, np.float32) / INK_LEVELS)), 0, 255).astype(np.uint8)
    image = Image.fromarray(grey, mode="L").resize((resolution, resolution), Image.Resampling.BICUBIC)
    return np.asarray(image.convert("RGB"))  # (R, R, 3)


def export_digits(
    out_dir: str | Path,
    split: str = "train",
    n: int | None = None,
    seed: int = 0,
    resolution: int = 32,
    held_out: float = HELD_OUT,
) -> Path:
    """Write the scans of ``split`` (the first ``n`` of them, in dataset order, if given) as an image
    folder: ``NNNNN.png`` + ``metadata.jsonl`` (``file_name``, ``text``), atomically; a non-empty
    ``out_dir`` is refused."""
    from .folder import new_image_folder

    scans, labels = digit_split(split, seed, held_out)
    if n is not None:
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        scans, labels = scans[:n], labels[:n]
    with new_image_folder(out_dir) as folder:
        for scan, label in zip(scans, labels, strict=True):
            folder.add(render_scan(scan, resolution), digit_caption(int(label)))
    return Path(out_dir)
