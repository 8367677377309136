"""The training vocabulary saved with a model, and the warning for prompt words outside it."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from crossattn.cli import main
from crossattn.models.loading import default_model_dir, has_default_model
from crossattn.models.vocabulary import (
    dataset_words,
    grammar_words,
    load_vocabulary,
    model_vocabulary,
    unknown_words,
    write_training_vocabulary,
    write_vocabulary,
)

ROOT = Path(__file__).resolve().parents[1]


def test_grammar_words_are_the_scene_captions_words():
    words = grammar_words()
    assert {"a", "red", "purple", "circle", "triangle", "left", "of", "above", "and", "at", "the", "center"} <= words
    assert "an" in words  # "an orange circle" (issue 42)
    assert not {"cat", "ring"} & words
    assert "ring" in grammar_words(("circle", "ring"))


def test_unknown_words_are_named_once_in_order():
    words = grammar_words()
    assert unknown_words("A cat, left of the orange dog CAT!", words) == ["cat", "dog"]
    assert unknown_words("a red circle above a blue square", words) == []


def test_write_and_load_round_trip_and_inherit(tmp_path):
    write_vocabulary(tmp_path / "base", ["a red circle", "a blue square"], source="test")
    assert load_vocabulary(tmp_path / "base") == {"a", "red", "circle", "blue", "square"}
    write_vocabulary(tmp_path / "tuned", ["a green ring"], inherit_from=tmp_path / "base")
    assert load_vocabulary(tmp_path / "tuned") == {"a", "red", "circle", "blue", "square", "green", "ring"}
    assert load_vocabulary(tmp_path / "nothing-here") is None
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "vocabulary.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold"):
        load_vocabulary(tmp_path / "bad")


def test_dataset_words(tmp_path):
    from crossattn.data.folder import ImageFolderDataset
    from crossattn.data.shapes import ShapesDataset, export_image_folder

    assert dataset_words(ShapesDataset(4, shapes=("ring",))) == grammar_words(("ring",))
    folder = ImageFolderDataset(export_image_folder(tmp_path / "rings", 6, shapes=("ring",)), resolution=16)
    assert "ring" in dataset_words(folder) <= grammar_words(("ring",))
    items = [{"text": "a red ring"}, {"text": "Two cats."}]
    assert dataset_words(items) == {"a", "red", "ring", "two", "cats"}


def test_shipped_model_has_the_grammar_vocabulary():
    if not has_default_model():
        pytest.skip("no default model shipped")
    assert load_vocabulary(default_model_dir()) == grammar_words()
    assert model_vocabulary(None) == grammar_words()


def test_ship_script_writes_the_vocabulary_when_the_run_has_none(tmp_path):
    spec = importlib.util.spec_from_file_location("ship", ROOT / "scripts" / "ship_default_model.py")
    ship = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship)
    ship.ensure_vocabulary(tmp_path)
    assert set(json.loads((tmp_path / "vocabulary.json").read_text())["words"]) == grammar_words()
    write_vocabulary(tmp_path, ["a ring"])
    ship.ensure_vocabulary(tmp_path)  # a run's own vocabulary is kept
    assert load_vocabulary(tmp_path) == {"a", "ring"}


def test_generate_warns_naming_unknown_words(tiny_model_dir, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    write_vocabulary(model, grammar_words())
    argv = ["generate", "--model", str(model), "--steps", "1", "--quiet", "--out", str(tmp_path / "out")]
    assert main([*argv, "a cat left of a red circle", "a red circle"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "crossattn: warning:" in err[0] and "never saw in training: cat" in err[0]
    assert main(["maps", "a red circle", *argv[1:]]) == 0
    assert "never saw" not in capsys.readouterr().err


def test_training_vocabulary_adds_the_captions_to_the_starting_model(tiny_model_dir, tmp_path):
    from crossattn.data.shapes import ShapesDataset

    start = tmp_path / "start"
    shutil.copytree(tiny_model_dir, start / "final")  # a run folder: its final/ is read
    write_vocabulary(start / "final", ["a cat"])
    path = write_training_vocabulary(tmp_path / "tuned", ShapesDataset(2, shapes=("ring",)), init_from=start)
    assert load_vocabulary(path.parent) == grammar_words(("ring",)) | {"cat"}
    assert write_training_vocabulary(tmp_path / "none", iter(()), init_from=None) is None
