"""Drive many generated bad inputs through crossattn's surfaces and count how each was answered (issue 43).

Surfaces, in turn: the CLI in-process (``crossattn.cli.main``, the code path of ``crossattn ...``, stderr
captured), of which every ``--subprocess-every``-th case runs as a real ``python -m crossattn`` process
instead (exit codes and stderr as a user sees them); the Python API (``SamplingRequest``, ``read_image``,
``check_model_folder``, ``load_pipeline``); and a running ``crossattn serve`` on 127.0.0.1 driven with
``gradio_client`` (``benchmarks/fuzz_server.py``: bad values in every input of ``/generate`` and ``/edit``,
and a good request answered at the end). Each case is *refused cleanly* (the CLI: exit 2 or 1 and one
``crossattn: error:`` line that is not an internal error; the API: an error of the crossattn family; the
server: an answer naming the value), *succeeded*, or *failed* (a traceback, an internal error, any other
exception, an unclear answer, a partial file left in the output folder, a new file after a refusal, or a
file that was there before, the user's, changed). Cases use the suite's tiny model (``tests/conftest.py``),
so one costs milliseconds to a few tenths of a second; a real process ~1 s.

    PYTHONPATH=src python benchmarks/fuzz.py [--cases 3000] [--seed 0] [--subprocess-every 20] [--no-server]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
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
            with warnings.catch_warnings():  # Pillow deprecates writing some modes (I as PNG): they are still read
                warnings.simplefilter("ignore", DeprecationWarning)
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


def cli_case(rng: random.Random, model: Path, folder: Path) -> tuple[list[str], list[str] | None]:
    """One command line with one or two bad (or odd) inputs (it samples at most one tiny image), and the command
    to run before it, if any. Some cases find the output folder there already with a file of the user's in it;
    some first write a good image and then ask again for the same file without ``--overwrite``."""
    out = ["--out", str(folder / "out"), "--steps", "1", "--quiet"]
    if rng.random() < 0.3:
        (folder / "out").mkdir()
        (folder / "out" / rng.choice(["notes.txt", "a-red-circle.png", ".hidden"])).write_bytes(b"the user's")
    kind = rng.choice(["number", "number", "prompt", "image", "model", "edit", "lora", "again"])
    if kind == "number":
        flags = [a for _ in range(rng.randint(1, 2)) for a in (rng.choice(NUMBER_FLAGS), rng.choice(NUMBERS))]
        return ["generate", "a red circle", "--model", str(model), *out, *flags], None
    if kind == "prompt":
        return [rng.choice(["generate", "maps"]), random_text(rng), "--model", str(model), *out], None
    if kind == "image":
        image = image_file(rng, folder)
        extra = rng.choice([[], ["--strength", rng.choice(NUMBERS)], ["--samples", rng.choice(NUMBERS)]])
        return ["maps", "a red circle", "--model", str(model), "--image", str(image), *out, *extra], None
    if kind == "model":
        return ["generate", "a red circle", "--model", str(damaged_model(rng, model, folder)), *out], None
    if kind == "edit":
        return ["edit", "a red circle", "--to", random_text(rng), "--model", str(model), *out], None
    if kind == "again":
        argv = [rng.choice(["generate", "maps"]), "a red circle", "--model", str(model), *out]
        return argv, argv
    lora = folder / "lora"
    lora.mkdir()
    (lora / "pytorch_lora_weights.safetensors").write_bytes(damaged_bytes(rng, (model / WEIGHTS).read_bytes()))
    return ["generate", "a red circle", "--model", str(model), "--lora", str(lora), *out], None


def files_of(folder: Path) -> dict[str, str]:
    """Every file under ``folder``: its path relative to ``folder`` and a hash of its bytes."""
    files = (p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else ()
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest() for p in files}


def verdict(code, err: str, case: Path, before: dict[str, str]) -> str:
    """``refused``, ``succeeded`` or ``failed: <kind>: <why>`` for a CLI run's exit code and stderr, from the
    case folder now and as it was before (``before``, :func:`files_of`). Kinds: traceback, unclear, partial,
    touched."""
    now = files_of(case)
    touched = sorted(name for name, digest in before.items() if now.get(name) != digest)
    new = sorted(set(now) - set(before))
    partial = [n for n in new if Path(n).name.startswith(".") or Path(n).suffix in (".tmp", ".part")]
    lines = [line for line in err.splitlines() if line.strip() and ": warning:" not in line]
    if touched:
        return f"failed: touched: the user's {touched} changed or gone"
    if partial or any(not n.startswith("out/") for n in new):
        return f"failed: partial: {new} left behind"
    if any("Traceback" in line or "internal error" in line for line in lines) or code == "raised":
        return f"failed: traceback: {lines[-1:]}"
    if code == 0:
        return "succeeded"
    if len(lines) != 1 or not re.match(r"crossattn( [a-z-]+)?: error: ", lines[0]) or code not in (1, 2):
        return f"failed: unclear: exit {code}, {lines[:3]}"
    return f"failed: partial: a refusal left {new}" if new else "refused"


def run_cli(argv: list[str]) -> tuple[object, str]:
    """``crossattn.cli.main(argv)`` in this process: its exit code (``"raised"`` if an exception escaped it,
    the case then failed) and what it wrote on stderr."""
    import torch

    from crossattn.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        try:
            code = main(argv)
        except SystemExit as exit:
            code = exit.code
        except BaseException as error:  # noqa: BLE001 (a case that escapes main is a failure to count)
            code, err = "raised", io.StringIO(f"Traceback: {type(error).__name__}: {error}")
    torch.set_num_threads(1)  # a case's --threads stays with its case
    return code, err.getvalue()


def run_process(argv: list[str]) -> tuple[object, str]:
    """``python -m crossattn argv`` as a real process (one torch thread): its exit code and stderr. NUL and lone
    surrogates are left out of the arguments: no process can be given them."""
    argv = ["".join(c for c in a if c != "\x00" and not 0xD800 <= ord(c) <= 0xDFFF) for a in argv]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "crossattn", *argv], capture_output=True, text=True, env=env)
    return done.returncode, done.stderr


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
            return f"failed: not-family: {type(error).__name__}: {str(error)[:200]}"
    return "succeeded"


TAGS = ("traceback", "not-family", "unclear", "partial", "touched")


def table(results: dict[str, Counter]) -> str:
    """Per surface: cases tried, refused cleanly, succeeded, failed, and the failures by kind."""
    rows = [f"| surface | tried | refused cleanly | succeeded | failed | {' | '.join(TAGS)} |"]
    rows.append("|---" * (5 + len(TAGS)) + "|")
    for surface, counts in results.items():
        tried = sum(counts[k] for k in ("refused", "succeeded", "failed"))
        cells = [surface, tried, counts["refused"], counts["succeeded"], counts["failed"], *(counts[t] for t in TAGS)]
        rows.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(rows)


class Surfaces:
    """The surfaces a case goes to, and the state they share: the tiny model, the server and its client."""

    def __init__(self, tmp: Path, subprocess_every: int, server: bool):
        self.model, self.every, self.cli_cases = tiny_model(tmp), subprocess_every, 0
        self.model_files = files_of(self.model)
        self.proc = self.client = None
        if server:
            self.start_server(tmp)

    def start_server(self, tmp: Path) -> None:
        import socket

        from gradio_client import Client
        from serve_load import start_server

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.proc, line = start_server(port, 1, 16, tmp / "gradio", self.model)
        print(line, flush=True)
        self.client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)

    def names(self) -> list[str]:
        return ["cli", "api", "server"] if self.client else ["cli", "api"]

    def cli(self, rng: random.Random, case: Path) -> tuple[str, str, object]:
        """One CLI case, in this process or (every ``every``-th) as a real process: (surface, outcome, what)."""
        argv, first = cli_case(rng, self.model, case)
        if first:
            run_cli(first)
        before = files_of(case)
        self.cli_cases += 1
        real = self.every and self.cli_cases % self.every == 0
        code, err = (run_process if real else run_cli)(argv)
        return ("subprocess" if real else "cli"), verdict(code, err, case, before), (argv, err.strip()[-300:])

    def api(self, rng: random.Random, case: Path) -> tuple[str, str, object]:
        call, a, kw = api_case(rng, self.model, case)
        return "api", run_api(call, a, kw), (call.__name__, a, kw)

    def server(self, rng: random.Random, case: Path) -> tuple[str, str, object]:
        import fuzz_server

        api, inputs, changed = fuzz_server.server_case(rng, case, random_text, image_file)
        return "server", fuzz_server.ask(self.client, self.proc, api, inputs, changed), (api, changed)

    def close(self) -> str:
        """The server answering a good request at the end (and stopped), in words; the model folder unchanged."""
        import fuzz_server

        if files_of(self.model) != self.model_files:
            print("FAILED: the model folder the cases read changed")
        if not self.client:
            return "no server (--no-server)"
        alive = self.proc.poll() is None
        answered, seconds = fuzz_server.good_request(self.client) if alive else (False, 0.0)
        self.proc.terminate()
        self.proc.wait(timeout=30)
        return f"server alive at the end: {alive}; a good /generate answered: {answered} ({seconds:.1f} s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=3000, help="cases in all, shared by the surfaces (default: 3000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated cases (default: 0)")
    parser.add_argument("--subprocess-every", type=int, default=20, help="every Nth CLI case is a real process")
    parser.add_argument("--no-server", action="store_true", help="leave out the running-server surface")
    parser.add_argument("--show", type=int, default=5, help="failures shown per surface (default: 5)")
    parser.add_argument("--minutes", type=float, help="start no case after this many minutes (default: no limit)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped run still stops its server
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # serve_load, fuzz_server
    rng, results, failures = random.Random(args.seed), {}, {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        surfaces = Surfaces(Path(tmp), args.subprocess_every, not args.no_server)
        try:
            for i in range(args.cases):
                if args.minutes and time.perf_counter() - start > 60 * args.minutes:
                    print(f"stopped after {args.minutes} minutes", flush=True)
                    break
                case = Path(tmp) / f"case{i}"
                case.mkdir()
                name = surfaces.names()[i % len(surfaces.names())]
                surface, outcome, what = getattr(surfaces, name)(rng, case)
                counts = results.setdefault(surface, Counter())
                counts[outcome.split(":")[0]] += 1
                if outcome.startswith("failed"):
                    counts[outcome.split(":")[1].strip()] += 1
                    failures.setdefault(surface, []).append((what, outcome))
                shutil.rmtree(case, ignore_errors=True)
                if (i + 1) % 300 == 0:
                    print(f"{i + 1} cases, {time.perf_counter() - start:.0f} s\n{table(results)}", flush=True)
        finally:
            ending = surfaces.close()
    print(table(results))
    tried = sum(sum(c[k] for k in ("refused", "succeeded", "failed")) for c in results.values())
    print(f"({tried} cases in {time.perf_counter() - start:.0f} s, seed {args.seed}); {ending}")
    for surface, found in failures.items():
        for what, outcome in found[: args.show]:
            print(f"FAILED {surface}: {what!r} -> {outcome}")


if __name__ == "__main__":
    main()
