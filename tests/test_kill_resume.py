"""Nothing lost: a real ``python -m crossattn`` training process killed with SIGKILL (after a checkpoint,
in the middle of writing one, or while fine-tuning draws its prior images) goes on with ``--resume latest``
and ends with the very weights of an uninterrupted run, bit for bit, for each loop: ``train``,
``finetune`` (LoRA, new words, prior images) and ``train-clip``.

The reference run and the resumed one run in this process (``main``); only the killed one is a separate
process. To keep the suite fast it is forked from one process that imported crossattn's training code once
(:data:`FORK_SERVER`; the imports are most of a short run's time) and runs ``crossattn.cli.main``, what
``python -m crossattn`` runs; ``benchmarks/kill_resume.py`` kills 20 fresh ``python -m crossattn`` processes.
A kill point is found by polling the run folder; the process is stopped (SIGSTOP) and the folder looked at
again before the SIGKILL, so "killed while a temp checkpoint existed" is certain.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from crossattn.cli import main
from crossattn.training.runs import RunDir

from .conftest import tiny_config
from .model_copies import bpe_copy
from .test_finetune import ring_folder

SRC = Path(__file__).resolve().parents[1] / "src"
STEPS = 3  # checkpoints at 1, 2, 3: a kill mid-write of 2 or 3 still follows a complete one
COMMON = ["--threads", "1", "--no-progress"]
#: Reads ``[argv, stderr file]`` lines; forks a child per line that runs ``crossattn.cli.main(argv)`` with its
#: stderr in the file; answers the child's pid, then its exit code once reaped (-9: SIGKILLed).
FORK_SERVER = """
import json, os, sys
from crossattn.cli import main
# what a run imports when it starts (most of a short run's time): imported once here
import crossattn.training.train, crossattn.training.clip_training, crossattn.training.prior, crossattn.training.lora
import crossattn.models.loading, crossattn.models.pipeline, crossattn.models.vocabulary, crossattn.training.recipes
import crossattn.data.shapes, accelerate.accelerator, peft, diffusers.optimization, diffusers.training_utils
from diffusers import UNet2DConditionModel, DPMSolverMultistepScheduler
from transformers import CLIPTextModel, CLIPTokenizer
for line in sys.stdin:
    argv, log = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.dup2(os.open(log, os.O_WRONLY | os.O_CREAT), 2)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        code = 1
        try:
            code = main(argv)
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
        finally:
            os._exit(code)
    print(pid, flush=True)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
os._exit(0)  # stdin closed: exit without the interpreter's teardown of every module (about a second)
"""


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Accelerate keeps process-wide singletons; leave none behind for the next run."""
    from accelerate.state import AcceleratorState, GradientState

    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


@pytest.fixture(scope="module")
def fork_server():
    """The process killed runs are forked from (:data:`FORK_SERVER`), one torch thread."""
    env = os.environ | {"PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    pipes = dict(stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    server = subprocess.Popen([sys.executable, "-c", FORK_SERVER], env=env, **pipes)
    yield server
    server.stdin.close()
    server.wait(timeout=60)


@pytest.fixture(scope="module")
def setups(tiny_model_dir, tmp_path_factory):
    """Per loop kind: ``argv(out)`` (the command line of a run into ``out``)."""
    root = tmp_path_factory.mktemp("kill")
    (root / "tiny.json").write_text(json.dumps(tiny_config().to_dict()))
    base = bpe_copy(tiny_model_dir, root / "base", grammar=True)  # the prior is drawn; "ring" is a new word
    data = ring_folder(root / "rings", n=2)  # two images, so two prior images drawn
    every = ["--steps", str(STEPS), "--checkpoint-every", "1", "--batch-size", "2", *COMMON]
    train = ["train", "--model-config", str(root / "tiny.json"), "--sample-every", "0", "--log-every", "1"]
    finetune = ["finetune", str(data), "--model", str(base), "--lora", "2", "--no-samples"]
    clip = ["train-clip", "--dataset-size", "32", "--sample-every", "0", "--log-every", "1"]
    return {
        kind: (lambda out, a=argv: [*a, *every, "--out", str(out)])
        for kind, argv in (("train", train), ("finetune", finetune), ("clip", clip))
    }


@pytest.fixture(scope="module")
def references(setups, tmp_path_factory):
    """The uninterrupted run of each kind (made once, on first use)."""
    done: dict[str, Path] = {}

    def reference(kind: str) -> Path:
        if kind not in done:
            out = tmp_path_factory.mktemp(f"whole-{kind}") / "run"
            assert main(setups[kind](out)) == 0
            done[kind] = out
        return done[kind]

    return reference


def weights(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Every tensor of ``RUN/final`` and of the last checkpoint (raw weights, EMA), by file."""
    last = RunDir(run).list_checkpoints()[-1][1]
    files = [*(run / "final").rglob("*.safetensors"), *last.glob("*.safetensors")]
    return {str(f.relative_to(run)): load_file(f) for f in sorted(files)}


def assert_bit_identical(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and wa
    for name in wa:
        assert wa[name].keys() == wb[name].keys(), name
        for key, tensor in wa[name].items():
            assert torch.equal(tensor, wb[name][key]), f"{name}: {key} differs"


def kill_when(server: subprocess.Popen, argv: list[str], ready: Callable[[], bool], log: Path) -> None:
    """Fork a run of ``argv`` from ``server``; SIGKILL it at the first moment ``ready()`` holds (checked again
    with the process stopped, so the kill lands while it still holds)."""
    server.stdin.write(json.dumps([argv, str(log)]) + "\n")
    server.stdin.flush()
    pid = int(server.stdout.readline())
    deadline, killed = time.monotonic() + 300, False
    try:
        while not killed and time.monotonic() < deadline:
            os.kill(pid, 0)  # ProcessLookupError once the run has ended
            if ready():
                os.kill(pid, signal.SIGSTOP)
                killed = ready()
                os.kill(pid, signal.SIGKILL if killed else signal.SIGCONT)
            time.sleep(0.001)
    except ProcessLookupError:  # the run ended (and was reaped) before the kill point
        pass
    finally:
        if not killed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        code = int(server.stdout.readline())
    assert killed and code == -signal.SIGKILL, f"not killed at the point (exit {code}): {log.read_text()[-2000:]}"


def after_checkpoint(run: RunDir) -> bool:
    """Past the second complete checkpoint (so resuming skips work)."""
    return len(run.list_checkpoints()) >= 2


def mid_checkpoint(run: RunDir) -> bool:
    """A temp checkpoint folder is being written after the first complete checkpoint."""
    return bool(run.list_checkpoints()) and run.checkpoints.is_dir() and any(run.checkpoints.glob(".step-*.tmp"))


def mid_prior(run: RunDir) -> bool:
    """Fine-tuning is drawing its prior images (their folder exists only as its hidden temp)."""
    return any(run.root.glob(".prior.tmp-*"))


#: A kill mid-write also comes after a complete checkpoint, so it covers "after a checkpoint" too; the
#: suite keeps one per loop (and fine-tuning's prior drawing) to stay fast. ``after_checkpoint`` and 20
#: random kill points run in ``benchmarks/kill_resume.py``.
CASES = [
    ("train", mid_checkpoint),
    ("finetune", mid_checkpoint),
    ("finetune", mid_prior),
    ("clip", mid_checkpoint),
]


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "moment"), CASES, ids=[f"{k}-{m.__name__}" for k, m in CASES])
def test_sigkilled_run_resumes_to_the_uninterrupted_weights(
    kind, moment, fork_server, setups, references, tmp_path, capsys
):
    out = tmp_path / "run"
    run = RunDir(out)
    kill_when(fork_server, setups[kind](out), lambda: moment(run), tmp_path / "stderr.txt")
    assert not (out / "final").exists(), "killed before the end"
    if out.joinpath("log.jsonl").is_file():  # a line torn by the kill is dropped on resume
        with open(out / "log.jsonl", "a", encoding="utf-8") as fh:
            fh.write('{"step": 99, "lo')
    assert main([*setups[kind](out), "--resume", "latest"]) == 0
    assert ("starting the run from step 0" in capsys.readouterr().err) == (moment is mid_prior)  # no checkpoint yet
    assert_bit_identical(references(kind), out)
    assert not [p.name for p in out.rglob(".*") if ".tmp" in p.name or ".old" in p.name], "temp files cleaned up"
    steps = [json.loads(line).get("step") for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == STEPS


def test_setup_clears_what_a_killed_run_left_half_written(tmp_path):
    """The hidden temps of every writer of a run folder go; the run's own files and the user's stay."""
    run = RunDir(tmp_path / "run")
    stale = [".final.tmp-1a2b3c4d/unet", ".final.old-123/x", ".prior.tmp-0f0f0f0f/0.png", ".config.99aa88bb.json"]
    stale += [".log.12345678.jsonl", "checkpoints/.step-000004.tmp/model.safetensors", "checkpoints/.step-000002.old/x"]
    stale += ["samples/.step-000002.deadbeef.png", "snapshots/.minute-001.tmp-00000000/x"]
    kept = ["config.json", "log.jsonl", "checkpoints/step-000002/trainer_state.json", "samples/step-000002.png"]
    kept += [".user-notes.txt", "notes.txt"]
    for name in stale + kept:
        (run.root / name).parent.mkdir(parents=True, exist_ok=True)
        (run.root / name).write_text("x")
    run.remove_stale_temps()
    assert sorted(str(p.relative_to(run.root)) for p in run.root.rglob("*") if p.is_file()) == sorted(kept)
