"""``crossattn edit``: the files it writes, what the sidecar says, refusals before any sampling."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from crossattn.cli import main

from .attention_helpers import generator

ARGS = ["edit", "a red circle", "--to", "a blue circle", "--steps", "2", "--seed", "3", "--quiet"]


def run_edit(model, out, *extra) -> int:
    return main([*ARGS, "--model", str(model), "--out", str(out), *extra])


def test_writes_the_three_images_the_comparison_and_the_sidecar(tiny_model_dir, tmp_path, capsys):
    assert run_edit(tiny_model_dir, tmp_path, "--reweight", "circle=2", "--cross-steps", "0.5") == 0
    stem = tmp_path / "a-blue-circle-3"
    names = [f"{stem.name}.{v}.png" for v in ("source", "plain", "edited", "compare")] + [f"{stem.name}.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    assert capsys.readouterr().out.split() == [str(tmp_path / n) for n in names]
    for view in ("source", "plain", "edited"):
        assert Image.open(tmp_path / f"{stem.name}.{view}.png").size == (16, 16)
    assert Image.open(tmp_path / f"{stem.name}.compare.png").size[0] > 100  # a figure: images and maps
    meta = json.loads((tmp_path / f"{stem.name}.json").read_text())
    assert meta["source_prompt"] == "a red circle" and meta["target_prompt"] == meta["prompt"] == "a blue circle"
    assert meta["edit"] == {
        "cross_steps": 0.5,
        "self_steps": 0.2,
        "reweight": {"circle": 2.0},
        "halves": "both",
        "blend": True,
        "shared_steps": 0.3,
        "changed_words": [["red", "blue"]],
    }
    assert (meta["seed"], meta["steps"], meta["guidance_scale"], meta["relation_guidance"]) == (3, 2, 4.0, 0.0)
    assert len(meta["model"]["hash"]) == 16 and meta["files"]["edited"] == f"{stem.name}.edited.png"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--reweight", "square=2"], "reweighted word 'square' is not in the prompt"),
        (["--reweight", "circle"], "accepted: WORD=F"),
        (["--cross-steps", "1.5"], "cross_steps is 1.5; accepted: a fraction"),
        (["--self-steps", "-1"], "self_steps is -1.0; accepted: a fraction"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tiny_model_dir, tmp_path, capsys, extra, message):
    assert run_edit(tiny_model_dir, tmp_path / "out", *extra) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("crossattn: error:") and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_refuses_to_overwrite_before_sampling_and_writes_what_the_library_edit_gives(
    tiny_pipe, tiny_model_dir, tmp_path, capsys
):
    """A file in the way: refused before sampling, nothing written; with ``--overwrite`` the command writes
    the images :func:`crossattn.edit` gives (on the pipeline the model folder was saved from)."""
    import crossattn

    (tmp_path / "a-blue-circle-3.json").write_text("mine")
    assert run_edit(tiny_model_dir, tmp_path) == 2
    assert "will not overwrite" in capsys.readouterr().err
    assert (tmp_path / "a-blue-circle-3.json").read_text() == "mine"
    assert not (tmp_path / "a-blue-circle-3.edited.png").exists()
    assert run_edit(tiny_model_dir, tmp_path, "--overwrite") == 0
    result = crossattn.edit(tiny_pipe, "a red circle", "a blue circle", generator=generator(3), num_inference_steps=2)
    for view in ("source", "plain", "edited"):
        written = np.asarray(Image.open(tmp_path / f"a-blue-circle-3.{view}.png"))
        assert np.array_equal(written, np.asarray(getattr(result, view))), view


def test_relation_prompts_are_edited_with_relation_guidance_off(tiny_model_dir, tmp_path):
    source, target = "a red circle left of a blue square", "a green circle left of a blue square"
    args = ["edit", source, "--to", target, "--steps", "2", "--quiet", "--model", str(tiny_model_dir)]
    assert main([*args, "--out", str(tmp_path)]) == 0  # inside the CLI's trace too: no guidance pass ran
    meta = json.loads((tmp_path / "a-green-circle-left-of-a-blue-square-0.json").read_text())
    assert meta["relation_guidance"] == 0 and meta["edit"]["changed_words"] == [["red", "green"]]


def test_help_lists_edit(capsys):
    with pytest.raises(SystemExit):
        main(["edit", "--help"])
    out = capsys.readouterr().out
    assert "--cross-steps" in out and "--reweight" in out and "--to" in out
