"""Drive many generated bad inputs through crossattn's surfaces and count how each was answered (issue 43).

Surfaces: the CLI in-process (``crossattn.cli.main`` with stderr captured), the CLI as real subprocesses
(a few), and the Python API (``SamplingRequest``, ``read_image``, ``check_model_folder``,
``load_pipeline``). Each case is *refused cleanly* (the CLI: one ``crossattn: error:`` line, exit 2 or 1,
not an internal error; the API: an error of the crossattn family), *succeeded*, or *failed* (a traceback,
an internal error, any other exception, or a partial file left in the output folder). Cases use a tiny
model folder built here (channels 8/16, 16×16), so one costs milliseconds to a few tenths of a second.

    PYTHONPATH=src python benchmarks/fuzz.py [--cases 3000] [--seed 0] [--subprocesses 6] [--show 5]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

from PIL import Image

NUMBERS = ["-1", "0", "1", "2", "3.5", "nan", "inf", "-inf", "1e309", "abc", "", "0x10", "1_000", " 2", "1e3"]
NUMBERS += [str(2**63), str(2**64), "99999999999999999999", "100000", "-0", "٣"]
NUMBER_FLAGS = ["--steps", "--guidance", "--seed", "--num-images", "--batch-size", "--upscale", "--height"]
NUMBER_FLAGS += ["--width", "--threads", "--relation-guidance"]
WEIGHTS = "unet/diffusion_pytorch_model.safetensors"


def tiny_model(folder: Path) -> Path:
    """The tiny pipeline of ``tests/conftest.py``'s ``tiny_config`` (the suite's own), saved as a diffusers folder."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for tests.conftest
    from tests.conftest import tiny_config

    from crossattn.models.loading import placeholder_pipeline

    config = tiny_config()
    with contextlib.redirect_stderr(io.StringIO()):
        placeholder_pipeline(config).save_pretrained(folder / "tiny")
    return folder / "tiny"


def random_text(rng: random.Random) -> str:
    """A prompt from a mix of the ordinary, the empty, the unprintable and the far-away in Unicode."""
    pieces = ["a red circle", "", "   ", "\t\n", "\x00", "\x1b[31m", "\u202e", "🙂", "圆", "\ud800", "é" * 3]
    pieces += ["left of a blue square", "a " * 100, chr(rng.randrange(0x110000)), "\x7f", "\r"]
    return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 3)))


def damaged_bytes(rng: random.Random, whole: bytes) -> bytes:
    """``whole`` cut short, overwritten in places, or replaced by noise."""
    kind = rng.choice(["cut", "flip", "noise", "empty", "whole"])
    if kind == "cut":
        return whole[: rng.randrange(len(whole))]
    if kind == "flip":
        at = rng.randrange(min(len(whole), 300))
        return whole[:at] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 8))) + whole[at + 8 :]
    if kind == "noise":
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 200)))
    return b"" if kind == "empty" else whole


def image_file(rng: random.Random, folder: Path) -> Path:
    """An image file: a valid one of some mode and shape, or damaged bytes of one; or a folder."""
    path = folder / rng.choice(["x.png", "x.jpg", "x.gif", "x.tiff"])
    mode = rng.choice(["RGB", "RGBA", "L", "LA", "P", "1", "CMYK", "I;16", "I", "F"])
    size = rng.choice([(16, 16), (1, 1), (1, 9), (40, 3), (300, 200), (3, 3)])
    if mode == "CMYK" or path.suffix != ".jpg" or mode in ("RGB", "L"):
        try:
            Image.new(mode, size, rng.randrange(256) if mode in ("L", "P", "1", "I", "I;16") else None).save(path)
        except (OSError, ValueError, KeyError):  # a mode this format cannot hold
            Image.new("RGB", size).save(path)
    else:
        Image.new("RGB", size).save(path)
    if rng.random() < 0.6:
        path.write_bytes(damaged_bytes(rng, path.read_bytes()))
    if rng.random() < 0.05:
        path.unlink()
        path.mkdir()
    return path


def damaged_model(rng: random.Random, model: Path, folder: Path) -> Path:
    """A copy of ``model`` with one part damaged: weights, a config, the index, or a file gone."""
    copy = folder / "model"
    shutil.copytree(model, copy)
    part = rng.choice([WEIGHTS, "unet/config.json", "model_index.json", "text_encoder/model.safetensors"])
    target = copy / part
    if rng.random() < 0.15:
        target.unlink()
    elif part.endswith(".json") and rng.random() < 0.5:
        config = json.loads(target.read_text())
        key = rng.choice(sorted(config))
        config[key] = rng.choice([None, 0, -1, "x", [4, 8], {"a": 1}, 1e309])
        target.write_text(json.dumps(config))
    else:
        target.write_bytes(damaged_bytes(rng, target.read_bytes()))
    return copy


def cli_case(rng: random.Random, model: Path, folder: Path) -> list[str]:
    """One command line with one or two bad (or odd) inputs; it samples at most one tiny image."""
    out = ["--out", str(folder / "out"), "--steps", "1", "--quiet"]
    kind = rng.choice(["number", "number", "prompt", "image", "model", "edit", "lora"])
    if kind == "number":
        flags = [a for _ in range(rng.randint(1, 2)) for a in (rng.choice(NUMBER_FLAGS), rng.choice(NUMBERS))]
        return ["generate", "a red circle", "--model", str(model), *out, *flags]
    if kind == "prompt":
        return [rng.choice(["generate", "maps"]), random_text(rng), "--model", str(model), *out]
    if kind == "image":
        image = image_file(rng, folder)
        extra = rng.choice([[], ["--strength", rng.choice(NUMBERS)], ["--samples", rng.choice(NUMBERS)]])
        return ["maps", "a red circle", "--model", str(model), "--image", str(image), *out, *extra]
    if kind == "model":
        return ["generate", "a red circle", "--model", str(damaged_model(rng, model, folder)), *out]
    if kind == "edit":
        return ["edit", "a red circle", "--to", random_text(rng), "--model", str(model), *out]
    lora = folder / "lora"
    lora.mkdir()
    (lora / "pytorch_lora_weights.safetensors").write_bytes(damaged_bytes(rng, (model / WEIGHTS).read_bytes()))
    return ["generate", "a red circle", "--model", str(model), "--lora", str(lora), *out]


def verdict(code, err: str, out_dir: Path) -> str:
    """``refused``, ``succeeded`` or ``failed`` for a CLI run's exit code, stderr and output folder."""
    files = [p for p in out_dir.rglob("*") if p.is_file()] if out_dir.exists() else []
    partial = any(p.name.startswith(".") or p.suffix in (".tmp", ".part") for p in files)
    lines = [line for line in err.splitlines() if line.strip() and ": warning:" not in line]
    if code == 0:
        return "failed" if partial or any("Traceback" in line for line in lines) else "succeeded"
    clean = len(lines) == 1 and lines[0].startswith("crossattn") and ": error:" in lines[0]
    return "refused" if clean and "internal error" not in lines[0] and code in (1, 2) and not files else "failed"


def run_cli(argv: list[str]) -> tuple[object, str]:
    from crossattn.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        try:
            code = main(argv)
        except SystemExit as exit:
            code = exit.code
        except BaseException as error:  # noqa: BLE001 (a case that escapes main is a failure to count)
            code, err = "raised", io.StringIO(f"Traceback: {type(error).__name__}: {error}")
    return code, err.getvalue()


def api_case(rng: random.Random, model: Path, folder: Path):
    """One library call with bad inputs: a function and its arguments."""
    from crossattn.models.loading import check_model_folder, load_pipeline
    from crossattn.sampling import SamplingRequest
    from crossattn.sampling.given_image import read_image

    kind = rng.choice(["request", "request", "image", "model", "load"])
    if kind == "request":
        pool = [None, True, -1, 0, 1, 2.5, float("nan"), float("inf"), 2**63, 2**64, "3", [1], 10**12]
        field = rng.choice(["seed", "steps", "guidance", "num_images", "batch_size", "upscale", "height", "width"])
        return SamplingRequest, ([random_text(rng) or "x"],), {field: rng.choice(pool)}
    if kind == "image":
        return read_image, (image_file(rng, folder),), {}
    damaged = damaged_model(rng, model, folder)
    return (check_model_folder if kind == "model" else load_pipeline), (damaged,), {}


def run_api(call, args, kwargs) -> str:
    from crossattn.errors import CrossattnError

    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            call(*args, **kwargs)
        except CrossattnError:
            return "refused"
        except Exception as error:  # noqa: BLE001
            return f"failed: {type(error).__name__}: {str(error)[:200]}"
    return "succeeded"


def table(results: dict[str, Counter]) -> str:
    rows = [f"{'surface':<12} {'tried':>7} {'refused':>8} {'succeeded':>10} {'failed':>7}"]
    for surface, counts in results.items():
        tried = sum(counts.values())
        rows.append(f"{surface:<12} {tried:>7} {counts['refused']:>8} {counts['succeeded']:>10} {counts['failed']:>7}")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=3000, help="cases in all, shared by the surfaces (default: 3000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated cases (default: 0)")
    parser.add_argument("--subprocesses", type=int, default=6, help="of the CLI cases, run as real processes")
    parser.add_argument("--show", type=int, default=5, help="failures shown per surface (default: 5)")
    args = parser.parse_args()
    rng, results, failures = random.Random(args.seed), {}, {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_model(Path(tmp))
        for i in range(args.cases):
            case = Path(tmp) / f"case{i}"
            case.mkdir()
            surface = "api" if i % 2 else "cli"
            if surface == "cli" and i // 2 < args.subprocesses:
                surface, argv = "subprocess", cli_case(rng, model, case)
                done = subprocess.run([sys.executable, "-m", "crossattn", *argv], capture_output=True, text=True)
                outcome, what = verdict(done.returncode, done.stderr, case / "out"), argv
            elif surface == "cli":
                argv = cli_case(rng, model, case)
                code, err = run_cli(argv)
                outcome, what = verdict(code, err, case / "out"), (argv, err.strip()[-300:])
            else:
                call, a, kw = api_case(rng, model, case)
                outcome, what = run_api(call, a, kw), (call.__name__, a, kw)
            short = outcome.split(":")[0]
            results.setdefault(surface, Counter())[short] += 1
            if short == "failed":
                failures.setdefault(surface, []).append((what, outcome))
            shutil.rmtree(case, ignore_errors=True)
    print(table(results))
    print(f"({args.cases} cases in {time.perf_counter() - start:.0f} s, seed {args.seed})")
    for surface, found in failures.items():
        for what, outcome in found[: args.show]:
            print(f"FAILED {surface}: {what!r} -> {outcome}")


if __name__ == "__main__":
    main()
