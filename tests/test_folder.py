"""Image folder + metadata.jsonl: every problem found in one pass, images converted, nothing modified."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from crossattn.data.folder import FolderError, ImageFolderDataset, load_image, validate_folder


def write_metadata(folder, rows) -> None:
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def solid(folder, name, colour=(255, 0, 0), mode="RGB", size=(20, 10)):
    Image.new(mode, size, colour).save(folder / name)


def test_every_problem_is_listed_at_once(tmp_path):
    solid(tmp_path, "good.png")
    solid(tmp_path, "blank.png")
    solid(tmp_path, "orphan.png")
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    write_metadata(
        tmp_path,
        [
            {"file_name": "good.png", "text": "a red square"},
            {"file_name": "missing.png", "text": "a ghost"},
            {"file_name": "broken.png", "text": "a broken file"},
            {"file_name": "blank.png", "text": "  "},
            {"file_name": "good.png", "text": "again"},
        ],
    )
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    records, problems = validate_folder(tmp_path)
    assert [r.file_name for r in records] == ["good.png"]
    kinds = {(p.kind, p.file) for p in problems}
    assert kinds == {
        ("missing file", "missing.png"),
        ("unreadable or not an image", "broken.png"),
        ("empty caption", "blank.png"),
        ("duplicate entry", "good.png"),
        ("image without a caption line", "orphan.png"),
    }
    with pytest.raises(FolderError) as err:
        ImageFolderDataset(tmp_path, resolution=8)
    for name in ("missing.png", "broken.png", "blank.png", "orphan.png", "--skip-bad"):
        assert name in str(err.value)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before, "the user's folder must not change"


def test_skip_bad_trains_on_the_rest_and_counts(tmp_path):
    solid(tmp_path, "a.png")
    write_metadata(tmp_path, [{"file_name": "a.png", "text": "a red square"}, {"file_name": "gone.png", "text": "x"}])
    data = ImageFolderDataset(tmp_path, resolution=8, skip_bad=True)
    assert len(data) == 1 and data.skipped == 1
    item = data[0]
    assert item["text"] == "a red square" and item["pixel_values"].shape == (3, 8, 8)
    torch.testing.assert_close(item["pixel_values"][:, 0, 0], torch.tensor([1.0, -1.0, -1.0]))


def test_malformed_lines_and_csv(tmp_path):
    solid(tmp_path, "a.png")
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "ok"}\n{oops\n{"text": "no file"}\n')
    _, problems = validate_folder(tmp_path)
    assert [p.file for p in problems] == ["metadata.jsonl:2", "metadata.jsonl:3"]
    (tmp_path / "metadata.jsonl").unlink()
    with open(tmp_path / "metadata.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["file_name", "text"], ["a.png", "a red square"]])
    records, problems = validate_folder(tmp_path)
    assert [r.text for r in records] == ["a red square"] and not problems


def test_missing_folder_or_metadata(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        validate_folder(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="metadata.jsonl"):
        validate_folder(tmp_path)


def test_rgba_on_white_grayscale_expanded_and_centre_crop(tmp_path):
    Image.new("RGBA", (8, 8), (0, 0, 255, 0)).save(tmp_path / "clear.png")
    Image.new("L", (8, 8), 100).save(tmp_path / "grey.png")
    wide = np.zeros((10, 30, 3), np.uint8)
    wide[:, 10:20] = 255  # white middle third
    Image.fromarray(wide).save(tmp_path / "wide.png")
    assert (load_image(tmp_path / "clear.png", 4) == 255).all()
    grey = load_image(tmp_path / "grey.png", 4)
    assert grey.shape == (4, 4, 3) and (grey == 100).all()
    crop = load_image(tmp_path / "wide.png", 10)
    assert crop.shape == (10, 10, 3) and crop[:, 2:8].min() > 200


def test_flip_only_when_asked(tmp_path):
    half = np.zeros((8, 8, 3), np.uint8)
    half[:, :4] = 255
    Image.fromarray(half).save(tmp_path / "h.png")
    write_metadata(tmp_path, [{"file_name": "h.png", "text": "white left"}])
    plain = ImageFolderDataset(tmp_path, resolution=8)
    assert all(plain[0]["pixel_values"][0, 0, 0] == 1 for _ in range(10))
    flipping = ImageFolderDataset(tmp_path, resolution=8, flip=True)
    torch.manual_seed(0)
    assert {float(flipping[0]["pixel_values"][0, 0, 0]) for _ in range(20)} == {1.0, -1.0}
