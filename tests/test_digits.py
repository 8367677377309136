"""The handwritten-digits example (issue 7): export as an image folder, classifier on the real
scans ≥ 97 % held out, and the scoring of generated images checked on real held-out digits."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("sklearn")

from crossattn.data.digits import (  # noqa: E402
    DIGIT_WORDS,
    digit_caption,
    digit_split,
    export_digits,
    render_scan,
    split_indices,
)
from crossattn.data.folder import validate_folder  # noqa: E402
from crossattn.evaluation.digits import fit_digit_classifier, score_digits, to_scans  # noqa: E402


@pytest.fixture(scope="module")
def classifier():
    return fit_digit_classifier()


def test_captions():
    assert digit_caption(7) == "a handwritten digit seven"
    assert [digit_caption(d).split()[-1] for d in range(10)] == list(DIGIT_WORDS)
    with pytest.raises(ValueError, match="0–9"):
        digit_caption(10)


def test_split_is_seeded_disjoint_and_complete():
    a, b = split_indices(1797), split_indices(1797)
    assert np.array_equal(a["train"], b["train"])
    assert not set(a["train"]) & set(a["held_out"])
    assert len(a["train"]) + len(a["held_out"]) == 1797 and len(a["held_out"]) == round(0.2 * 1797)
    assert not np.array_equal(split_indices(1797, seed=1)["held_out"], a["held_out"])
    with pytest.raises(ValueError, match="splits: train, held_out, all"):
        digit_split("test")


def test_export_writes_images_and_captions(tmp_path):
    out = export_digits(tmp_path / "digits", "train", n=12)
    lines = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    _, labels = digit_split("train")
    assert [r["text"] for r in lines] == [digit_caption(d) for d in labels[:12]]
    assert sorted(p.name for p in out.glob("*.png")) == [r["file_name"] for r in lines]
    image = np.asarray(Image.open(out / lines[0]["file_name"]))
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert (image[0, 0] > 240).all(), "paper is white"
    assert image.min() < 60, "ink is dark"
    records, problems = validate_folder(out)
    assert len(records) == 12 and not problems
    with pytest.raises(FileExistsError):
        export_digits(out, "train", n=2)


def test_rendering_keeps_the_ink_and_inverts_back():
    scans, _ = digit_split("held_out")
    image = render_scan(scans[0])  # (32, 32, 3)
    assert np.array_equal(image[..., 0], image[..., 2])
    back = to_scans(image[None])[0]  # (8, 8)
    assert np.abs(back - scans[0]).mean() < 1.5  # of 16 levels: bicubic smoothing only


def test_classifier_on_real_digits_clears_97_percent(classifier):
    assert classifier.n_train + classifier.n_held_out == 1797
    assert classifier.held_out_accuracy >= 0.97


def test_scoring_recognises_real_held_out_digits_rendered_as_if_generated(classifier):
    """Round trip: held-out scans → 32×32 ink-on-white RGB (as the export draws them, as a model
    should) → downscaled back → classified; close to the classifier's own held-out accuracy."""
    scans, labels = digit_split("held_out")
    images = np.stack([render_scan(s) for s in scans])  # (N, 32, 32, 3)
    scores = score_digits(classifier, images, labels)
    assert scores["n"] == len(labels)
    assert scores["accuracy"] >= 0.95
    assert min(scores["per_digit"].values()) >= 0.85
    blank = np.full((10, 32, 32, 3), 255, np.uint8)
    assert score_digits(classifier, blank, range(10))["accuracy"] <= 0.2  # white pages are not every digit


def test_bad_inputs(classifier):
    with pytest.raises(ValueError, match="accepted: \\(N, H, H, 3\\)"):
        to_scans(np.zeros((2, 32, 32), np.uint8))
    with pytest.raises(ValueError, match="one prompted digit per image"):
        score_digits(classifier, np.zeros((2, 32, 32, 3), np.uint8), [1])


def test_export_command(tmp_path, capsys):
    from crossattn.cli import main

    assert main(["export", "digits", str(tmp_path / "d"), "--split", "held_out", "--n", "4"]) == 0
    _, labels = digit_split("held_out")
    lines = (tmp_path / "d" / "metadata.jsonl").read_text().splitlines()
    assert [json.loads(line)["text"] for line in lines] == [digit_caption(d) for d in labels[:4]]
    assert main(["export", "digits", str(tmp_path / "e"), "--shapes", "ring"]) == 2
    assert "wrote 4 images" in capsys.readouterr().out
