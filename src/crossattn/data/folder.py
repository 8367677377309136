"""A user's image folder with captions, in the ``datasets`` imagefolder convention.

A folder of images plus ``metadata.jsonl`` (one ``{"file_name": ..., "text": ...}`` per line) or
``metadata.csv`` with the same two columns; or, without either, a ``.txt`` caption file beside each image
(``0001.png`` + ``0001.txt``, the DreamBooth / kohya convention); or a local Hugging Face ``datasets`` folder
(``Dataset.save_to_disk``, or ``.parquet`` files) with an image and a caption column
(:func:`read_datasets_folder`, read through the ``datasets`` package). Before training, the whole folder is checked and every
problem is reported at once (missing file, unreadable or non-image file, empty caption, duplicate
entry, image without a caption line, malformed metadata line). Nothing in the folder is modified.

Images become RGB (transparent pixels composited on white, grayscale expanded), are resized so the
shorter side is the model resolution and centre-cropped (the diffusers text-to-image recipe), and
are flipped horizontally only when asked: a flip turns "left of" into a lie.

:func:`new_image_folder` writes such a folder (the scenes and digits exports use it).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import BadDataset

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
METADATA_FILES = ("metadata.jsonl", "metadata.csv")


@dataclass(frozen=True)
class Record:
    """One usable image and its caption."""

    file_name: str
    text: str


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the folder; ``file`` is relative to it."""

    kind: str
    file: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind}: {self.file}" + (f" ({self.detail})" if self.detail else "")


class FolderError(BadDataset):
    """The folder has problems; the message lists every one of them."""

    def __init__(self, folder: Path, problems: list[Problem]):
        self.problems = problems
        lines = "\n  ".join(str(p) for p in problems)
        super().__init__(
            f"{len(problems)} problem(s) in image folder {folder} (fix them or pass --skip-bad):\n  {lines}"
        )


class FolderWriter:
    """Adds ``NNNNN.png`` images and their caption lines to a folder being written."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.lines = folder, []

    def add(self, image: np.ndarray, text: str) -> str:
        """Save ``image`` ((H, W, 3) uint8) with caption ``text``; returns its file name."""
        name = f"{len(self.lines):05d}.png"
        Image.fromarray(image).save(self.folder / name)
        self.lines.append(json.dumps({"file_name": name, "text": text}))
        return name


@contextmanager
def new_image_folder(out_dir: str | Path, replace: bool = False) -> Iterator[FolderWriter]:
    """Write an image folder atomically: a non-empty ``out_dir`` is refused (unless ``replace``: then
    it is swapped for the new one, and kept if the block fails), images are added through the yielded
    writer (other files may go in ``writer.folder``), ``metadata.jsonl`` is written last, and the
    folder appears only when the whole block succeeded."""
    from ..files import ExistsError, atomic_dir

    out = Path(out_dir)
    if not replace and out.exists() and any(out.iterdir()):
        raise ExistsError(f"will not overwrite the files in {out}; choose an empty or new folder")
    with atomic_dir(out) as tmp:
        writer = FolderWriter(tmp)
        yield writer
        (tmp / "metadata.jsonl").write_text("\n".join(writer.lines) + "\n", encoding="utf-8")


def metadata_path(folder: Path) -> Path:
    for name in METADATA_FILES:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"no metadata.jsonl or metadata.csv in {folder}, and no .txt caption beside any image; expected lines like "
        '{"file_name": "0001.png", "text": "a red ring"}, or 0001.png with 0001.txt'
    )


def read_metadata(folder: Path) -> tuple[list[dict], list[Problem]]:
    """The metadata rows (each with ``file_name`` and ``text``) and the malformed lines."""
    path = metadata_path(folder)
    numbered: list[tuple[int, object]] = []
    problems: list[Problem] = []
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            numbered = list(enumerate(csv.DictReader(fh), start=2))  # line 1 is the header
    else:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                numbered.append((number, json.loads(line)))
            except json.JSONDecodeError as err:
                problems.append(Problem("malformed metadata line", f"{path.name}:{number}", err.msg))
    rows = []
    for number, row in numbered:
        if isinstance(row, dict) and "file_name" in row and "text" in row:
            rows.append(row)
        else:
            problems.append(Problem("malformed metadata line", f"{path.name}:{number}", "needs file_name and text"))
    return rows, problems


def caption_rows(root: Path) -> tuple[list[dict], list[Problem]]:
    """The ``file_name``/``text`` rows of ``metadata.jsonl``/``.csv``, else of the ``.txt`` files beside the images."""
    if any((root / name).is_file() for name in METADATA_FILES):
        return read_metadata(root)
    images = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    captioned = [p for p in images if p.with_suffix(".txt").is_file()]
    if not captioned:
        metadata_path(root)  # raises, naming what is expected
    rows = [
        {"file_name": p.relative_to(root).as_posix(), "text": p.with_suffix(".txt").read_text("utf-8")}
        for p in captioned
    ]
    return rows, []


def check_image(path: Path, name: str) -> Problem | None:
    """None if Pillow can fully decode the file, else the problem."""
    if not path.is_file():
        return Problem("missing file", name)
    try:
        with Image.open(path) as image:
            image.load()
    except (UnidentifiedImageError, OSError, ValueError) as err:
        return Problem("unreadable or not an image", name, type(err).__name__)
    return None


def validate_folder(folder: str | Path) -> tuple[list[Record], list[Problem]]:
    """Check everything in one pass: the usable records and every problem found."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    rows, problems = caption_rows(root)
    records, seen = [], set()
    for row in rows:
        name, text = str(row["file_name"]), str(row["text"] or "")
        if name in seen:
            problems.append(Problem("duplicate entry", name))
            continue
        seen.add(name)
        problem = check_image(root / name, name)
        if problem:
            problems.append(problem)
        elif not text.strip():
            problems.append(Problem("empty caption", name))
        else:
            records.append(Record(name, text.strip()))
    for image in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        relative = image.relative_to(root).as_posix()
        if relative not in seen and not any(part.startswith(".") for part in image.relative_to(root).parts):
            problems.append(Problem("image without a caption line", relative))
    return records, problems


def has_alpha(image: Image.Image) -> bool:
    """Whether ``image`` carries transparency (an alpha band, or a palette's transparent colour); not a mode
    name with an A in it (LAB's A is a colour axis)."""
    return image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or (image.mode == "P" and "transparency" in image.info)


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB with transparency composited on white (palette and LA images included)."""
    if has_alpha(image):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def resize_center_crop(image: Image.Image, resolution: int) -> Image.Image:
    """Shorter side to ``resolution`` (bicubic), then the central square."""
    scale = resolution / min(image.size)
    size = (max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale)))
    image = image.resize(size, Image.BICUBIC)
    left, top = (image.width - resolution) // 2, (image.height - resolution) // 2
    return image.crop((left, top, left + resolution, top + resolution))


def load_image(path: str | Path, resolution: int) -> np.ndarray:
    """The training view of one image: ``(resolution, resolution, 3)`` uint8."""
    with Image.open(path) as image:
        return np.asarray(resize_center_crop(to_rgb(image), resolution))


def is_datasets_folder(root: Path) -> bool:
    """A ``save_to_disk`` folder (``state.json``) or one of ``.parquet`` files (top level or ``data/``)."""
    return (root / "state.json").is_file() or any(root.glob("*.parquet")) or any(root.glob("data/*.parquet"))


def read_datasets_folder(root: Path, image_column: str, caption_column: str):
    """The records (``file_name`` = ``row N``), the PIL images and the problems of a local ``datasets`` folder."""
    try:
        import datasets
    except ImportError:
        raise BadDataset(f"{root} is a Hugging Face datasets folder; reading it needs: pip install datasets") from None
    if (root / "state.json").is_file():
        table = datasets.load_from_disk(str(root))
    else:
        files = sorted(str(p) for p in [*root.glob("*.parquet"), *root.glob("data/*.parquet")])
        table = datasets.load_dataset("parquet", data_files=files, split="train")
    for column in (image_column, caption_column):
        if column not in table.column_names:
            raise BadDataset(f"{root} has no column {column!r}; its columns are: {', '.join(table.column_names)}")
    if not isinstance(table.features[image_column], datasets.Image):
        table = table.cast_column(image_column, datasets.Image())  # e.g. parquet's {"bytes", "path"} structs
    records, images, problems = [], [], []
    for i, row in enumerate(table):
        text = str(row[caption_column] or "").strip()
        if not text:
            problems.append(Problem("empty caption", f"row {i}"))
            continue
        records.append(Record(f"row {i}", text))
        images.append(row[image_column])
    return records, images, problems


class ImageFolderDataset:
    """Items ``{"pixel_values": (3, H, W) float in [-1, 1], "text": caption}``, like the scenes dataset.

    The images are decoded once and kept in memory (small datasets: tens to hundreds of images).
    ``image_column`` and ``caption_column`` name the columns of a local ``datasets`` folder.
    """

    def __init__(
        self,
        folder: str | Path,
        resolution: int = 32,
        flip: bool = False,
        skip_bad: bool = False,
        image_column: str = "image",
        caption_column: str = "text",
    ):
        self.folder = Path(folder)
        if is_datasets_folder(self.folder):
            self.records, images, self.problems = read_datasets_folder(self.folder, image_column, caption_column)
        else:
            self.records, self.problems = validate_folder(self.folder)
            images = None
        if self.problems and not skip_bad:
            raise FolderError(self.folder, self.problems)
        if not self.records:
            raise ValueError(f"no usable images in {self.folder}")
        self.skipped = len(self.problems)
        self.flip = flip
        if images is None:
            loaded = [load_image(self.folder / r.file_name, resolution) for r in self.records]
        else:
            loaded = [np.asarray(resize_center_crop(to_rgb(image), resolution)) for image in images]
        self.images = np.stack(loaded)  # (N, H, W, 3)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        import torch

        pixels = torch.from_numpy(self.images[index]).permute(2, 0, 1).float() / 127.5 - 1  # (3, H, W)
        if self.flip and torch.rand(()) < 0.5:
            pixels = pixels.flip(-1)
        return {"pixel_values": pixels, "text": self.records[index].text}
