"""The sampling job the library owns (:mod:`crossattn.sampling`): request checks that name the bad
value, the command line and the web explorer building the same request (same plan, same sidecar),
and ``--model`` / ``--lora`` resolved once per command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from crossattn.cli import build_parser, main
from crossattn.sampling import MapsOptions, ModelRef, SamplingRequest, plan, sidecar

PROMPT = "a red circle left of a blue square"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"steps": 0}, "steps 0 is not accepted; give a whole number from 1 to 1000"),
        ({"steps": 10**11}, "steps 100000000000 is not accepted; give a whole number from 1 to 1000"),
        ({"steps": 2.5}, "steps 2.5 is not accepted"),
        ({"seed": -1}, "seed -1 is not accepted; give a whole number from 0 to 9223372036854775807"),
        ({"seed": 2**63}, "seed 9223372036854775808 is not accepted; give a whole number from 0 to"),
        ({"seed": True}, "seed True is not accepted"),
        ({"guidance": math.nan}, "guidance nan is not accepted; give a finite number"),
        ({"relation_guidance": -1}, "relation guidance -1 is not accepted; give a finite number >= 0"),
        ({"scheduler": "plms"}, "unknown scheduler 'plms'; choices: ddpm, ddim, dpm\\+\\+, euler"),
        ({"num_images": 0}, "num_images 0 is not accepted"),
        ({"num_images": 10**11}, "num_images 100000000000 is not accepted; give a whole number from 1 to 10000"),
        ({"batch_size": 0}, "batch_size 0 is not accepted"),
        ({"upscale": "2"}, "upscale '2' is not accepted"),
        ({"prompts": ["a red circle", 3]}, "prompt 3 is not accepted; prompts are strings"),
        ({"negative_prompt": 5}, "negative prompt 5 is not accepted"),
        ({"prompts": ["a red circle", ""]}, "prompt '' is empty; give at least one word"),
        ({"prompts": [" \t\n"]}, r"prompt ' \\t\\n' is empty"),
        ({"prompts": ["a\x00b"]}, r"prompt 'a\\x00b' has an unprintable character \(U\+0000 at position 1\)"),
        ({"prompts": ["a\x1b[31mred"]}, r"has an unprintable character \(U\+001B at position 1\)"),
        ({"prompts": ["a \ud800"]}, r"has an unprintable character \(U\+D800 at position 2\)"),
        ({"negative_prompt": "blur\x07"}, r"negative prompt 'blur\\x07' has an unprintable character"),
        ({"maps": "yes"}, "maps 'yes' is not accepted; give MapsOptions"),
    ],
)
def test_bad_request_values_are_named(change, message):
    with pytest.raises(ValueError, match=message):
        SamplingRequest(**{"prompts": (PROMPT,), **change})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"gif": True}, "--gif needs --per-step"),
        ({"kind": "all"}, "maps kind 'all' is not accepted; choices: cross, self, both"),
        ({"self_attn_pixel": (1, -2)}, "self-attention pixel coordinate -2 is not accepted"),
        ({"self_attn_pixel": (1, 2, 3)}, r"self_attn_pixel \(1, 2, 3\) is not accepted"),
    ],
)
def test_bad_maps_options_are_named(change, message):
    with pytest.raises(ValueError, match=message):
        MapsOptions(**change)


def test_a_request_is_normalised():
    request = SamplingRequest(PROMPT, seed=3.0, steps=4, out="somewhere")
    assert request.prompts == (PROMPT,) and request.seed == 3 and isinstance(request.seed, int)
    assert request.out == Path("somewhere") and request.guidance == 4.0
    assert request.replace(steps=7).steps == 7
    with pytest.raises(ValueError, match="steps 0"):
        request.replace(steps=0)


def test_maps_options_give_the_trace_arguments():
    assert MapsOptions().trace_kwargs() == {"kind": "cross", "layers": None, "per_step": False, "per_head": False}
    options = MapsOptions(layers=[16, "up*"], html=True, self_attn_pixel=(3, 4), per_step=True, gif=True)
    assert options.trace_kwargs() == {"kind": "both", "layers": [16, "up*"], "per_step": True, "per_head": True}


def test_flags_fill_the_request_by_name():
    args = build_parser().parse_args(
        ["generate", PROMPT, "--seed", "5", "--steps", "3", "--negative", "green", "--scheduler", "ddim"]
    )
    request = SamplingRequest.from_flags(vars(args), prompts=args.prompt)
    assert (request.seed, request.steps, request.negative_prompt, request.scheduler) == (5, 3, "green", "ddim")
    assert request.batch_size is None and request.maps is None  # --batch-size unset, --maps is generate's own
    assert request.out == Path("outputs") and request.relation_guidance == args.relation_guidance


def cli_request(out: Path) -> SamplingRequest:
    """What ``crossattn generate ... --maps`` builds from its command line."""
    from crossattn.commands.generate import read_prompts
    from crossattn.commands.shared import request_from_args

    argv = ["generate", PROMPT, "--seed", "5", "--steps", "3", "--negative", "green", "--scheduler", "ddim"]
    args = build_parser().parse_args([*argv, "--guidance", "2.5", "--maps", "--out", str(out)])
    return request_from_args(args, read_prompts(args), maps=MapsOptions())


def test_the_web_session_and_the_cli_build_the_same_job(tiny_pipe, tmp_path):
    from crossattn.web.session import Request

    cli = cli_request(tmp_path)
    form = Request.of(PROMPT, negative_prompt="green", seed=5, steps=3, guidance=2.5, scheduler="ddim")
    web = form.check(tiny_pipe.tokenizer, tiny_pipe.max_length).sampling_request(tmp_path)
    assert form.sampling == cli.config  # the page's settings are a SamplingConfig: the CLI request's own shape
    assert plan(web) == plan(cli)
    assert web.pipeline_kwargs() == cli.pipeline_kwargs()
    (job,) = plan(cli)
    model = {"path": "p", "hash": "h"}
    assert sidecar(job, web, "ddim", model, (16, 16)) == sidecar(job, cli, "ddim", model, (16, 16))
    assert web.maps.trace_kwargs()["kind"] == "both"  # the page also needs self-attention


@pytest.fixture(scope="module")
def lora_dir(tiny_model_dir, tmp_path_factory):
    """A LoRA run folder for the tiny model, made once for the module (the commands only read it)."""
    from crossattn.models.loading import load_pipeline
    from crossattn.training.lora import add_lora, save_lora

    pipe = load_pipeline(tiny_model_dir)
    add_lora(pipe, rank=2)
    folder = tmp_path_factory.mktemp("lora")
    save_lora(pipe, folder / "final")
    return folder


@pytest.fixture
def lookups(monkeypatch):
    """Counts of model-folder checks, LoRA-folder checks and content hashes made from now on."""
    import crossattn.files
    import crossattn.models.loading

    counts = {"model": 0, "lora": 0, "hash": 0}

    def counted(module, name, key):
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            counts[key] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    counted(crossattn.models.loading, "check_model_folder", "model")
    counted(crossattn.models.loading, "check_lora_folder", "lora")
    counted(crossattn.files, "folder_hash", "hash")
    return counts


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", PROMPT, "--maps"],
        ["maps", PROMPT],
        ["edit", "a red circle", "--to", "a blue circle"],
    ],
)
def test_model_and_lora_are_resolved_once_per_command(argv, tiny_model_dir, lora_dir, lookups, tmp_path):
    common = ["--model", str(tiny_model_dir), "--lora", str(lora_dir), "--steps", "1", "--quiet"]
    assert main([*argv, *common, "--out", str(tmp_path / "out")]) == 0
    assert lookups == {"model": 1, "lora": 1, "hash": 2}
    (sidecar_path,) = [p for p in (tmp_path / "out").glob("*.json") if ".maps." not in p.name]
    meta = json.loads(sidecar_path.read_text())
    assert meta["model"] == ModelRef.resolve(tiny_model_dir, lora_dir).identity()
    assert meta["model"]["lora"]["path"] == str(lora_dir / "final")


def test_the_library_runs_a_job_without_the_command_line(tiny_model_dir, tmp_path):
    from crossattn.sampling import run

    request = SamplingRequest(["a red circle", "a blue square"], steps=1, num_images=2, batch_size=3, out=tmp_path)
    heard = []
    written = run(request, ModelRef.resolve(tiny_model_dir), quiet=True, on_written=heard.append)
    assert written == heard and sorted(p.name for p in tmp_path.glob("*.png")) == [
        "a-blue-square-0-0.png",
        "a-blue-square-0-1.png",
        "a-red-circle-0-0.png",
        "a-red-circle-0-1.png",
    ]
    with pytest.raises(FileExistsError):
        run(request, ModelRef.resolve(tiny_model_dir), quiet=True)


def test_nothing_under_web_imports_the_command_line():
    web = Path(__file__).resolve().parents[1] / "src" / "crossattn" / "web"
    for path in web.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for forbidden in ("import argparse", "from ..commands", "crossattn.commands"):
            assert forbidden not in text, f"{path.name}: {forbidden}"
