"""``crossattn generate`` over many prompts: batching across prompts, repeated prompts, slug clashes,
run folders as --model / --lora, and a quiet command line."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from crossattn.cli import main
from tests.conftest import generator

PROMPTS = [
    "a red circle",
    "a blue square left of a green triangle",
    "a yellow circle at the top left",
    "a purple square and a red circle",
    "a green triangle above a blue circle",
]


def generate(model, out, *args: str) -> int:
    return main(["generate", "--model", str(model), "--out", str(out), "--steps", "3", "--quiet", *args])


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.int16)


def test_batched_prompts_give_the_images_of_one_call_per_prompt(tiny_model_dir, tmp_path):
    """Across prompts in batches of 3 against one at a time: the float images agree to < 1e-4 (batched
    CPU kernels sum in another order, so they are not bitwise equal), the PNGs to one grey level.
    One at a time is one command with ``--batch-size 1`` (each prompt sampled alone, as by a command of
    its own: the same seed, the same name; one model load instead of five)."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    assert generate(tiny_model_dir, tmp_path / "batched", "--prompts-file", str(prompts), "--batch-size", "3") == 0
    assert generate(tiny_model_dir, tmp_path / "single", "--prompts-file", str(prompts), "--batch-size", "1") == 0
    assert generate(tiny_model_dir, tmp_path / "alone", PROMPTS[-1]) == 0  # a command of its own: the same bytes
    last = "a-green-triangle-above-a-blue-circle-0-0.png"
    assert (tmp_path / "alone" / last).read_bytes() == (tmp_path / "single" / last).read_bytes()
    names = sorted(p.name for p in (tmp_path / "single").glob("*.png"))
    assert names == sorted(p.name for p in (tmp_path / "batched").glob("*.png")) and len(names) == 5
    for name in names:
        diff = np.abs(pixels(tmp_path / "batched" / name) - pixels(tmp_path / "single" / name))
        assert diff.max() <= 1, name


def test_batched_pipeline_call_matches_single_calls(tiny_pipe):
    one = [
        tiny_pipe(p, generator=generator(i), num_inference_steps=4, output_type="pt").images
        for i, p in enumerate(PROMPTS)
    ]
    batch = tiny_pipe(PROMPTS, generator=[generator(i) for i in range(5)], num_inference_steps=4, output_type="pt")
    assert (torch.cat(one) - batch.images).abs().max() < 1e-4


def test_a_repeated_prompt_gets_the_next_images(tiny_model_dir, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\na red circle\n")
    assert generate(tiny_model_dir, tmp_path / "file", "--prompts-file", str(prompts), "--seed", "5") == 0
    assert generate(tiny_model_dir, tmp_path / "n2", "a red circle", "--seed", "5", "--num-images", "2") == 0
    names = sorted(p.name for p in (tmp_path / "file").glob("*.png"))
    assert names == ["a-blue-square-5-0.png", "a-red-circle-5-0.png", "a-red-circle-5-1.png"]
    meta = json.loads((tmp_path / "file" / "a-red-circle-5-1.json").read_text())
    assert (meta["index"], meta["image_seed"]) == (1, 6)
    for name in ("a-red-circle-5-0.png", "a-red-circle-5-1.png"):
        assert np.abs(pixels(tmp_path / "file" / name) - pixels(tmp_path / "n2" / name)).max() <= 1


def test_prompts_with_the_same_slug_get_distinct_names(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    assert generate(tiny_model_dir, out, "a red circle", "A red circle!", "a red circle 2", "a red circle") == 0
    prompts = {p.name: json.loads(p.read_text())["prompt"] for p in out.glob("*.json")}
    assert prompts == {
        "a-red-circle-0-0.json": "a red circle",
        "a-red-circle-0-1.json": "a red circle",
        "a-red-circle-2-0-0.json": "A red circle!",
        "a-red-circle-2-2-0-0.json": "a red circle 2",
    }


def test_run_folders_work_as_model_and_lora(tiny_pipe, tiny_model_dir, tmp_path):
    """``--model RUN`` loads ``RUN/final``; ``--lora RUN`` loads ``RUN/final``'s adapter (made on a copy of the
    pipeline the model folder was saved from: no load from disk)."""
    pytest.importorskip("peft")
    from crossattn.training.lora import add_lora, save_lora

    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run / "final")
    pipe = copy.deepcopy(tiny_pipe)
    add_lora(pipe, rank=2)
    save_lora(pipe, tmp_path / "lora" / "final")
    for model, lora, folder in [(run, None, "a"), (run / "final", None, "b"), (tiny_model_dir, tmp_path / "lora", "c")]:
        extra = ["--lora", str(lora)] if lora else []
        assert generate(model, tmp_path / folder, "a red circle", *extra) == 0
    meta = json.loads((tmp_path / "c" / "a-red-circle-0-0.json").read_text())
    assert meta["model"]["lora"]["path"] == str(tmp_path / "lora" / "final")
    assert json.loads((tmp_path / "a" / "a-red-circle-0-0.json").read_text())["model"]["path"] == str(run / "final")
    assert (tmp_path / "a" / "a-red-circle-0-0.png").read_bytes() == (
        tmp_path / "b" / "a-red-circle-0-0.png"
    ).read_bytes()


def test_a_run_folder_without_final_is_named(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert generate(tmp_path / "run", tmp_path / "out", "a red circle") == 2
    assert "no model_index.json in it or in its final/" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["generate", "maps"])
def test_loading_is_quiet_and_quiet_drops_the_sampling_bar(tiny_model_dir, tmp_path, capfd, command):
    argv = [command, "a red circle", "--model", str(tiny_model_dir), "--steps", "2", "--threads", "1"]
    assert main([*argv, "--out", str(tmp_path / "loud")]) == 0
    err = capfd.readouterr().err
    assert "Loading" not in err and "float32" not in err, err
    assert "0/2" in err  # the one sampling bar
    assert main([*argv, "--out", str(tmp_path / "quiet"), "--quiet"]) == 0
    assert capfd.readouterr().err == ""


def test_eval_loads_quietly(tiny_model_dir, tmp_path, capfd):
    argv = ["eval", "--model", str(tiny_model_dir), "--n", "2", "--steps", "1", "--no-grounding", "--threads", "1"]
    assert main([*argv, "--out", str(tmp_path / "eval")]) == 0
    err = capfd.readouterr().err
    assert "Loading" not in err and "float32" not in err, err
