"""The running-server surface of ``benchmarks/fuzz.py``: bad values in every input of ``/generate`` and
``/edit`` of a ``crossattn serve`` on 127.0.0.1, sent with ``gradio_client`` as a user's script would.

A case changes one or two inputs of a small good request (1 step) to a generated bad or odd value; the
answer is *refused* (Gradio's ``AppError`` whose message names the changed input or its value, with no
traceback), *succeeded* (the server served it), or *failed* (a generic or unclear message, any other
exception, or the server process gone). Values JSON cannot carry (NaN, infinities, lone surrogates) are sent
as text ("nan") or left out: ``gradio_client`` refuses them before anything is sent.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

#: what a message may call each input (its label on the page, or its name)
NAMES = {
    "prompt": ("prompt",),
    "negative_prompt": ("prompt",),
    "target": ("edit", "prompt", "target"),
    "seed": ("seed",),
    "steps": ("steps",),
    "guidance": ("guidance",),
    "relation_guidance": ("relation",),
    "strength": ("strength",),
    "height": ("height", "size"),
    "width": ("width", "size"),
    "scheduler": ("scheduler",),
    "image": ("image",),
    "null_text": ("null",),
}
NUMBERS = ["nan", "inf", "-inf", "abc", "", "1e309", "0x10", "٣", " 2", None, True, [1], {"a": 1}]
NUMBERS += [-1, 0, 1, 2.5, -0.0, 7, 2**63, 2**64, 10**30, 100000, 1e308, -(2**70)]
SCHEDULERS = ["plms", "", "DDIM", "default ", "euler", "dpm++", None, 3, "\x00", "a" * 300]
FIELDS = {
    "/generate": ["prompt", "negative_prompt", "seed", "steps", "guidance", "relation_guidance", "scheduler"]
    + ["image", "strength", "height", "width"],
    "/edit": ["prompt", "negative_prompt", "seed", "steps", "guidance", "scheduler", "image", "target", "null_text"],
}


def sendable(text: str) -> str:
    """``text`` without lone surrogates (UTF-8 cannot hold them: the client refuses them before sending)."""
    return "".join(c for c in text if not 0xD800 <= ord(c) <= 0xDFFF)


def bad_value(rng: random.Random, field: str, folder: Path, random_text, image_file):
    """A generated bad or odd value for ``field`` (``random_text`` and ``image_file`` come from fuzz.py)."""
    from gradio_client import handle_file

    if field in ("prompt", "negative_prompt", "target"):
        return sendable(random_text(rng))
    if field == "scheduler":
        return rng.choice(SCHEDULERS)
    if field == "null_text":
        return rng.choice([None, "x", 2, [True], "", False])
    if field == "image":
        kind = rng.random()
        if kind < 0.15:
            return {"path": rng.choice(["/etc/hostname", "/etc/passwd", str(folder), "../x.png", ""])}
        if kind < 0.2:
            return rng.choice(["not a file", 3, {"url": "http://127.0.0.1:9/x.png"}])
        path = image_file(rng, folder)
        return handle_file(str(path)) if path.is_file() else {"path": str(path)}
    return rng.choice(NUMBERS)


def server_case(rng: random.Random, folder: Path, random_text, image_file) -> tuple[str, dict, dict]:
    """``(endpoint, inputs, changed)``: a good 1-step request with one or two inputs changed."""
    api = rng.choice(["/generate", "/generate", "/edit"])
    inputs: dict = {"prompt": "a red circle", "steps": 1}
    if api == "/edit":
        inputs["target"] = "a blue circle"
    fields = rng.sample(FIELDS[api], rng.randint(1, 2))
    changed = {f: bad_value(rng, f, folder, random_text, image_file) for f in fields}
    return api, {**inputs, **changed}, changed


def clear(message: str, changed: dict) -> bool:
    """An answer a user can act on: one message naming a changed input or its value, no traceback, not
    Gradio's bare "Error"."""
    text = message.strip()
    if not text or text == "Error" or "Traceback" in text or len(text) > 600:
        return False
    low = text.lower()
    named = any(word in low for field in changed for word in NAMES[field])
    return named or any(str(value) in text for value in changed.values() if str(value))


def ask(client, proc, api: str, inputs: dict, changed: dict) -> str:
    """The case's outcome: refused / succeeded / failed: <why>."""
    from gradio_client.exceptions import AppError
    from gradio_client.utils import QueueError

    for _ in range(30):
        try:
            client.predict(**inputs, api_name=api)
            outcome = "succeeded"
        except QueueError:
            time.sleep(1.0)
            continue
        except AppError as err:
            outcome = "refused" if clear(str(err), changed) else f"failed: unclear: {str(err)[:300]!r}"
        except Exception as err:  # noqa: BLE001 (count every failure)
            outcome = f"failed: {type(err).__name__}: {str(err)[:300]}"
        break
    else:
        outcome = "failed: still busy after 30 tries"
    return outcome if proc.poll() is None else f"failed: the server exited ({proc.returncode}) after {outcome}"


def good_request(client) -> tuple[bool, float]:
    """A good ``/generate`` (1 step) after the fuzzing: answered, and its seconds."""
    t = time.perf_counter()
    try:
        out = client.predict(prompt="a red circle left of a blue square", steps=1, api_name="/generate")
        return bool(out and out[0]), time.perf_counter() - t
    except Exception:  # noqa: BLE001 (the answer is "no")
        return False, time.perf_counter() - t
