"""Prior preservation: the base model's own captions and images, drawn once, reused, never clobbered."""

from __future__ import annotations

import json

import pytest

from crossattn.cli import main
from crossattn.config import SamplingConfig
from crossattn.data.folder import FolderWriter
from crossattn.files import ExistsError
from crossattn.models.vocabulary import grammar_words, words_of
from crossattn.training.lora import TOKENS_NAME
from crossattn.training.prior import INFO_NAME, PriorSettings, prior_captions, prior_folder

from .model_copies import bpe_copy
from .test_finetune import ring_folder

pytest.importorskip("peft")


@pytest.fixture(scope="module")
def grammar_model(tiny_model_dir, tmp_path_factory):
    """The tiny pipeline with a vocabulary of the scenes grammar (circle, square, triangle); only read."""
    return bpe_copy(tiny_model_dir, tmp_path_factory.mktemp("grammar") / "base", grammar=True)


def test_prior_captions_are_seeded_grammar_captions_in_the_base_words():
    vocabulary = grammar_words()
    captions = prior_captions(60, seed=0, vocabulary=vocabulary)
    assert captions == prior_captions(60, seed=0, vocabulary=vocabulary)
    assert captions != prior_captions(60, seed=1, vocabulary=vocabulary)
    assert all(set(words_of(c)) <= vocabulary for c in captions)
    assert any(" of " in c for c in captions) and any(" at the " in c for c in captions)  # kinds mixed
    assert {w for c in captions for w in words_of(c)} >= {"circle", "square", "triangle"}
    with_ring = prior_captions(200, seed=0, vocabulary=grammar_words(("circle", "ring")))
    assert {w for c in with_ring for w in words_of(c)} >= {"ring"} and "square" not in " ".join(with_ring)


def test_no_prior_captions_for_a_model_of_other_words():
    assert prior_captions(5, seed=0, vocabulary={"a", "photo", "of", "cat"}) is None
    assert prior_captions(5, seed=0, vocabulary=grammar_words() - {"above"}) is None


def test_prior_folder_is_drawn_once_reused_and_not_clobbered(grammar_model, tmp_path, monkeypatch):
    import crossattn.training.prior as prior

    run, vocabulary = tmp_path / "run", grammar_words()
    settings = PriorSettings(count=3, base_model=str(grammar_model), sampling=SamplingConfig(steps=2))
    folder = prior_folder(run, settings, vocabulary, replace=False, progress=False)
    lines = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    assert [line["text"] for line in lines] == prior_captions(3, 0, vocabulary)
    assert all((folder / line["file_name"]).is_file() for line in lines)
    info = {"count": 3, "base_model": str(grammar_model), "seed": 0, "steps": 2, "guidance": 4.0}
    assert json.loads((folder / INFO_NAME).read_text()) == info  # the keys folders drawn before hold: reused

    def no_drawing(*args, **kwargs):
        raise AssertionError("drew again")

    monkeypatch.setattr(prior, "draw_prior", no_drawing)
    assert prior_folder(run, settings, vocabulary, replace=False, progress=False) == folder  # reused
    with pytest.raises(AssertionError, match="drew again"):  # --overwrite starts over: drawn afresh
        prior_folder(run, settings, vocabulary, replace=True, progress=False)
    other = PriorSettings(count=2, base_model=str(grammar_model), sampling=SamplingConfig(steps=2))
    with pytest.raises(ExistsError, match="--overwrite"):
        prior_folder(run, other, vocabulary, replace=False, progress=False)
    assert len((folder / "metadata.jsonl").read_text().splitlines()) == 3  # the old images are intact
    monkeypatch.undo()

    def broken_add(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(FolderWriter, "add", broken_add)  # a redraw that fails half-way
    with pytest.raises(RuntimeError, match="disk full"):
        prior_folder(run, other, vocabulary, replace=True, progress=False)
    assert len((folder / "metadata.jsonl").read_text().splitlines()) == 3  # the old images are back
    monkeypatch.undo()
    prior_folder(run, other, vocabulary, replace=True, progress=False)
    assert len((folder / "metadata.jsonl").read_text().splitlines()) == 2


def test_finetune_draws_prior_images_and_trains_on_them(grammar_model, tmp_path, capsys):
    out = tmp_path / "o"
    argv = ["finetune", str(ring_folder(tmp_path / "rings")), "--model", str(grammar_model), "--out", str(out)]
    argv += ["--steps", "2", "--batch-size", "2", "--lora", "2", "--no-samples", "--no-progress"]
    assert main([*argv, "--prior", "201"]) == 2
    assert "--prior must be 0–200" in capsys.readouterr().err and not out.exists()
    assert main([*argv, "--prior", "3"]) == 0
    assert len((out / "prior" / "metadata.jsonl").read_text().splitlines()) == 3
    assert json.loads((out / "final" / "lora_info.json").read_text())["prior_images"] == 3
    assert main([*argv, "--prior", "2"]) == 2  # a run is there: nothing redrawn without --overwrite
    assert len((out / "prior" / "metadata.jsonl").read_text().splitlines()) == 3
    plain = tmp_path / "plain"  # also the run that trains no new word: "ring" is new to the base, and stays untrained
    assert main([*argv[:-10], "--out", str(plain), *argv[-8:], "--prior", "0", "--no-new-words"]) == 0
    assert not (plain / "prior").exists()
    assert json.loads((plain / "final" / "lora_info.json").read_text())["prior_images"] == 0
    assert not (plain / "final" / TOKENS_NAME).exists()
