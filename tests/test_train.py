"""The training loop on a tiny config: it learns, it resumes exactly, its checkpoints survive
interruptions, and its run folder and command line refuse what they should."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from crossattn.config import ModelConfig, TrainingConfig
from crossattn.data.shapes import ShapesDataset
from crossattn.training.batching import ShardedBatchSampler
from crossattn.training.runs import RunDir
from crossattn.training.train import train

from .conftest import tiny_config

TINY = tiny_config()


def quick(**kw) -> TrainingConfig:
    """A few steps of batch 2, no sampling, checkpoint every 2 steps."""
    base = {
        "steps": 4,
        "batch_size": 2,
        "warmup_steps": 1,
        "sample_every": 0,
        "checkpoint_every": 2,
        "log_every": 1,
    }
    return TrainingConfig(**(base | kw))


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Accelerate keeps process-wide singletons; leave none behind for the next test."""
    from accelerate.state import AcceleratorState, GradientState

    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def scenes(n: int = 64) -> ShapesDataset:
    return ShapesDataset(n, resolution=16, seed=0)


class StopAt(Exception):
    pass


def stop_at(step: int):
    def hook(state):
        if state.step == step:
            raise StopAt(step)

    return hook


def test_tiny_config_overfits_one_batch(tmp_path):
    cfg = quick(steps=60, batch_size=4, learning_rate=3e-3, lr_schedule="constant", warmup_steps=0)
    cfg.caption_dropout, cfg.checkpoint_every = 0.0, 1000
    result = train(TINY, cfg, scenes(4), tmp_path / "run", progress=False)
    first, last = sum(result.losses[:10]) / 10, sum(result.losses[-10:]) / 10
    assert last < 0.5, result.losses
    assert last < 0.6 * first, (first, last)


def test_resume_latest_equals_uninterrupted_run(tmp_path):
    cfg = quick(steps=4, grad_accum=2, checkpoint_every=2)
    whole = train(TINY, cfg, scenes(), tmp_path / "whole", progress=False)
    with pytest.raises(StopAt):
        train(TINY, cfg, scenes(), tmp_path / "cut", on_step_end=stop_at(3), progress=False)
    assert [s for s, _ in RunDir(tmp_path / "cut").list_checkpoints()] == [2]
    resumed = train(TINY, cfg, scenes(), tmp_path / "cut", resume="latest", progress=False)

    assert resumed.step == whole.step == 4
    assert resumed.losses == whole.losses[2:]  # the same batches, noise and weights from step 3 on
    for ckpt in ("model.safetensors", "model_1.safetensors"):  # raw U-Net and text encoder weights
        a = load_file(tmp_path / "whole/checkpoints/step-000004" / ckpt)
        b = load_file(tmp_path / "cut/checkpoints/step-000004" / ckpt)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    a = load_file(tmp_path / "whole/final/unet/diffusion_pytorch_model.safetensors")  # EMA weights
    b = load_file(tmp_path / "cut/final/unet/diffusion_pytorch_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    logs = [[json.loads(x) for x in (tmp_path / r / "log.jsonl").read_text().splitlines()] for r in ("whole", "cut")]
    assert [(x["step"], x["lr"], x["loss"]) for x in logs[0]] == [(x["step"], x["lr"], x["loss"]) for x in logs[1]]


def test_time_limit_stops_with_checkpoint_and_final_then_resumes(tmp_path):
    cfg = quick(steps=6, checkpoint_every=100, time_limit=1e-9)  # past the limit after the first step
    cut = train(TINY, cfg, scenes(), tmp_path / "run", progress=False)
    assert cut.step == 1 and len(cut.losses) == 1
    assert [s for s, _ in RunDir(tmp_path / "run").list_checkpoints()] == [1]
    assert (tmp_path / "run/final/unet/diffusion_pytorch_model.safetensors").is_file()
    again = train(TINY, cfg, scenes(), tmp_path / "run", resume="latest", progress=False)
    assert again.step == 1 and again.losses == []  # the clock is the run's, kept across resumes: no step more
    cfg.time_limit = 0.0
    rest = train(TINY, cfg, scenes(), tmp_path / "run", resume="latest", progress=False)
    assert rest.step == 6 and len(rest.losses) == 5


def test_a_time_limited_run_shows_its_clock_not_its_step_budget(tmp_path, capsys):
    cfg = quick(steps=10**6, checkpoint_every=100, time_limit=1e-9)  # a clock-bound run, as the speedrun
    train(TINY, cfg, scenes(), tmp_path / "run", progress=True)
    bar = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "s of training clock" in bar and "step=1" in bar and "1000000" not in bar


def test_grounding_loss_trains_and_needs_masks(tmp_path):
    cfg = quick(steps=3, grounding_weight=1.0)
    masked = ShapesDataset(64, resolution=16, seed=0, with_masks=True)
    result = train(TINY, cfg, masked, tmp_path / "run", progress=False)
    plain = train(TINY, quick(steps=3), scenes(), tmp_path / "plain", progress=False)
    assert result.step == 3 and all(a > b for a, b in zip(result.losses, plain.losses, strict=True))
    with pytest.raises(ValueError, match="needs word masks"):
        train(TINY, cfg, scenes(), tmp_path / "nomasks", progress=False)


def test_resume_before_the_first_checkpoint_starts_over(tmp_path, capsys):
    """A run stopped before its first checkpoint (only its config.json written) goes on from step 0."""
    from crossattn.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": TINY.to_dict(), "training": quick(steps=1).to_dict()}))
    (run / "log.jsonl").write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "lo')  # the stopped run's, torn
    assert main(["train", "--out", str(run), "--resume", "latest", "--no-progress"]) == 0
    assert "no checkpoint in" in capsys.readouterr().err  # said, then started from step 0
    assert [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()] == [1]
    assert (run / "final/model_index.json").is_file()
    assert main(["train", "--out", str(tmp_path / "nothing"), "--resume", "latest"]) == 2
    assert "holds no run" in capsys.readouterr().err


def test_interrupted_checkpoint_write_keeps_previous(tmp_path, monkeypatch):
    from accelerate import Accelerator

    real_save = Accelerator.save_state

    def crash_on_second(self, output_dir=None, **kw):
        if "step-000004" in str(output_dir):
            (Path(output_dir) / "model.safetensors").write_bytes(b"half a file")
            raise OSError("disk full")
        return real_save(self, output_dir, **kw)

    monkeypatch.setattr(Accelerator, "save_state", crash_on_second)
    with pytest.raises(OSError, match="disk full"):
        train(TINY, quick(), scenes(), tmp_path / "run", progress=False)
    monkeypatch.undo()
    run = RunDir(tmp_path / "run")
    assert [s for s, _ in run.list_checkpoints()] == [2]  # the half-written one is not a checkpoint
    assert run.resolve_resume("latest").name == "step-000002"
    result = train(TINY, quick(), scenes(), run.root, resume="latest", progress=False)
    assert result.step == 4 and (run.final / "model_index.json").is_file()
    assert not list(run.checkpoints.glob(".*")), "temp folders are cleaned up"


def test_refuses_to_overwrite_a_run(tmp_path, capsys):
    from crossattn.cli import main

    out = tmp_path / "run"
    train(TINY, quick(steps=1), scenes(), out, progress=False)
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(TINY, quick(steps=1), scenes(), out, progress=False)
    assert main(["train", "--out", str(out), "--steps", "1"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    (out / "notes.txt").write_text("mine")
    train(TINY, quick(steps=2), scenes(), out, overwrite=True, progress=False)
    assert (out / "notes.txt").read_text() == "mine"  # only the run's own files are replaced
    assert [s for s, _ in RunDir(out).list_checkpoints()] == [2]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch-size", "0"], "--batch-size: 0 must be at least 1"),
        (["--resolution", "30"], "resolution 30 is not divisible by 4"),
        (["--caption-dropout", "1.5"], "caption_dropout must be in [0, 1)"),
        (["--mixed-precision", "fp8"], "mixed_precision 'fp8'"),
        (["--data", "cats"], "--data 'cats'"),
        (["--resume", "latest", "--overwrite"], "contradict"),
    ],
)
def test_bad_values_get_one_line(tmp_path, capsys, argv, message):
    from crossattn.cli import main

    try:
        code = main(["train", "--out", str(tmp_path / "run"), *argv])
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "run").exists()


def test_batch_sampler_shards_and_restarts():
    full = [ShardedBatchSampler(40, 4, seed=3, rank=r, world_size=2) for r in (0, 1)]
    streams = [[b for b, _ in zip(s, range(12), strict=False)] for s in full]  # 2.4 epochs each
    for j in range(5):  # one epoch: the two processes read disjoint items covering the dataset
        assert not set(streams[0][j]) & set(streams[1][j])
    assert sorted(i for s in streams for b in s[:5] for i in b) == list(range(40))
    restarted = ShardedBatchSampler(40, 4, seed=3, rank=1, world_size=2, start=7)
    assert [b for b, _ in zip(restarted, range(5), strict=False)] == streams[1][7:12]
    with pytest.raises(ValueError, match="fewer than one step"):
        ShardedBatchSampler(5, 4, world_size=2)


def test_cli_train_then_generate(tmp_path, capsys):
    from crossattn.cli import main

    (tmp_path / "tiny.json").write_text(json.dumps(TINY.to_dict()))
    grid = {"sample_prompts": ["a red circle"], "sample_settings": {"steps": 2}}  # a small sample grid
    (tmp_path / "training.json").write_text(json.dumps(grid))
    out = tmp_path / "run"
    argv = ["train", "--out", str(out), "--model-config", str(tmp_path / "tiny.json"), "--steps", "2"]
    argv += ["--config", str(tmp_path / "training.json")]
    argv += ["--batch-size", "2", "--sample-every", "2", "--fp16", "--no-progress"]
    assert main(argv) == 0
    assert (out / "samples/step-000002.png").is_file()
    saved = json.loads((out / "config.json").read_text())
    assert saved["model"]["resolution"] == 16 and saved["training"]["save_fp16"] is True
    assert saved["training"]["sample_settings"]["steps"] == 2 and saved["training"]["steps"] == 2  # file, then flags
    weights = load_file(out / "final/unet/diffusion_pytorch_model.safetensors")
    assert all(w.dtype == torch.float16 for w in weights.values())
    gen = ["generate", "a red circle", "--model", str(out / "final"), "--steps", "2", "--out", str(tmp_path / "img")]
    assert main(gen) == 0
    assert (tmp_path / "img/a-red-circle-0-0.png").is_file()


@pytest.fixture(scope="module")
def base_final(tmp_path_factory) -> Path:
    """``RUN/final`` of a 2-step run of the tiny config (made once; tests only read it)."""
    run = tmp_path_factory.mktemp("base") / "run"
    train(TINY, quick(steps=2), scenes(), run, progress=False)
    return run / "final"


def test_init_from_a_pipeline_folder(base_final, tmp_path):
    cfg = quick(steps=2, init_from=str(base_final), train_text_encoder=False)
    before = load_file(base_final / "text_encoder/model.safetensors")
    train(TINY, cfg, scenes(), tmp_path / "tuned", progress=False)
    after = load_file(tmp_path / "tuned/final/text_encoder/model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)  # frozen text encoder untouched
    a = load_file(base_final / "unet/diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "tuned/final/unet/diffusion_pytorch_model.safetensors")
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the U-Net moved on from the base


#: ``python -m <launcher module> ...``: the console scripts ``torchrun`` and ``accelerate launch``.
LAUNCHERS = {
    "torchrun": ["torch.distributed.run", "--nproc_per_node", "2", "-m", "crossattn"],
    "accelerate": ["accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "-m", "crossattn"],
}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_two_cpu_processes_share_the_run(tmp_path, launcher):
    """Two processes over gloo on one CPU machine: world size 2, one run folder, both RNG states saved."""
    import os
    import subprocess
    import sys

    (tmp_path / "tiny.json").write_text(json.dumps(TINY.to_dict()))
    out = tmp_path / "run"
    args = ["train", "--out", str(out), "--model-config", str(tmp_path / "tiny.json"), "--steps", "2"]
    args += ["--batch-size", "2", "--checkpoint-every", "2", "--log-every", "1", "--sample-every", "0", "--no-progress"]
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = os.environ | {"PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", *LAUNCHERS[launcher], *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    launch = json.loads((out / "config.json").read_text())["launch"]
    assert launch["world_size"] == 2
    ckpt = RunDir(out).checkpoint(2)
    assert sorted(p.name for p in ckpt.glob("random_states_*.pkl")) == ["random_states_0.pkl", "random_states_1.pkl"]
    assert [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()] == [1, 2]
    assert (out / "final/model_index.json").is_file()


def test_cli_init_from_reads_the_folders_model_config(base_final, tmp_path):
    import shutil

    from crossattn.cli import main
    from crossattn.commands.train import model_config_from_folder

    assert model_config_from_folder(base_final) == TINY
    bare = tmp_path / "bare"
    shutil.copytree(base_final, bare)
    (bare / "crossattn_config.json").unlink()  # read off the component configs instead
    assert model_config_from_folder(bare) == TINY
    out = tmp_path / "tuned"
    argv = ["train", "--init-from", str(bare), "--out", str(out), "--steps", "1", "--batch-size", "2"]
    assert main([*argv, "--freeze-text-encoder", "--sample-every", "0", "--no-progress"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert ModelConfig.from_dict(saved["model"]) == TINY and saved["training"]["init_from"] == str(bare)
    assert saved["training"]["train_text_encoder"] is False


def test_final_tokenizer_keeps_the_bpe_files(base_final, tmp_path):
    """``RUN/final/tokenizer`` holds vocab.json + merges.txt and loads from them alone."""
    import shutil

    from transformers import CLIPTokenizer

    from crossattn.models.tokenizer import load_tokenizer

    assert (base_final / "tokenizer/vocab.json").is_file() and (base_final / "tokenizer/merges.txt").is_file()
    folder = shutil.copytree(base_final / "tokenizer", tmp_path / "tokenizer")
    (folder / "tokenizer.json").unlink()  # what shipping the default model drops
    prompt = "a red circle left of a blue square"
    assert CLIPTokenizer.from_pretrained(folder)(prompt).input_ids == load_tokenizer()(prompt).input_ids


class _RunsCode:
    """Unpickling this object runs code (``__reduce__``): what a hostile checkpoint could hold."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_resume_refuses_a_checkpoint_with_pickled_custom_state(tmp_path):
    import pickle

    train(TINY, quick(steps=2), scenes(), tmp_path / "run", progress=False)
    checkpoint = RunDir(tmp_path / "run").checkpoint(2)
    assert (checkpoint / "trainer_state.json").is_file() and (checkpoint / "ema.safetensors").is_file()
    assert not list(checkpoint.glob("custom_checkpoint_*"))  # nothing of ours is pickled
    marker = tmp_path / "code-ran"
    (checkpoint / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(ValueError, match="refusing to resume .*custom_checkpoint_0.pkl.*could run code"):
        train(TINY, quick(steps=4), scenes(), tmp_path / "run", resume="latest", progress=False)
    assert not marker.exists()
    (checkpoint / "custom_checkpoint_0.pkl").unlink()
    (checkpoint / "trainer_state.json").unlink()
    with pytest.raises(FileNotFoundError, match="no trainer_state.json"):
        train(TINY, quick(steps=4), scenes(), tmp_path / "run", resume="latest", progress=False)


def test_trained_token_rows_are_written_into_a_stock_text_encoder(base_final, tmp_path):
    """``trainable_token_ids`` (the rest of the text encoder frozen): ``final`` holds a plain token table with
    the trained rows in it, not peft's wrapper keys, which ``CLIPTextModel`` would load as a random table."""
    from transformers import CLIPTextModel

    ids = (320, 736, 1746)  # "a</w>", "red</w>", "blue</w>" in the CLIP BPE ("a" is in every caption)
    cfg = quick(steps=2, init_from=str(base_final), train_text_encoder=False, trainable_token_ids=ids)
    cfg.embedding_lr = 1e-2
    train(TINY, cfg, scenes(), tmp_path / "rows", progress=False)
    before = load_file(base_final / "text_encoder/model.safetensors")
    after = load_file(tmp_path / "rows/final/text_encoder/model.safetensors")
    assert set(after) == set(before)
    key = next(k for k in after if k.endswith("token_embedding.weight"))
    moved = (after[key] != before[key]).any(dim=1).nonzero().flatten().tolist()
    assert 320 in moved and set(moved) <= set(ids)  # those rows trained (where the batches held them), no other
    assert all(torch.equal(before[k], after[k]) for k in before if k != key)
    loaded = CLIPTextModel.from_pretrained(tmp_path / "rows/final/text_encoder")
    assert torch.equal(loaded.get_input_embeddings().weight, after[key])
