"""Weight files checked before loading, and loading failures explained: a model or LoRA folder whose
safetensors file is truncated or not one at all, or whose ``config.json`` disagrees with its weights, is a
:class:`~crossattn.errors.BadModelFolder` naming the folder, the file and what is wrong with it, not an
``OSError`` or a shape ``RuntimeError`` from deep inside diffusers.

A safetensors file is an 8-byte little-endian header length, a JSON header giving each tensor's dtype,
shape and ``data_offsets`` into the data that follows; so the header alone says how long the file must be.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import BadModelFolder, CrossattnError

#: A header longer than this is not one (the largest real headers, of sharded 10 B models, are a few MB).
MAX_HEADER = 100_000_000
#: diffusers' and torch's words for a tensor whose shape in the file differs from the config's model
MISMATCH = (
    re.compile(
        r"(?P<key>\S+) expected shape torch\.Size\((?P<model>\[[^\]]*\])\), but got torch\.Size\((?P<file>\[[^\]]*\])\)"
    ),
    re.compile(
        r"size mismatch for (?P<key>[^:]+): copying a param with shape torch\.Size\((?P<file>\[[^\]]*\])\) from "
        r"checkpoint, the shape in current model is torch\.Size\((?P<model>\[[^\]]*\])\)"
    ),
)


def megabytes(n: int) -> str:
    return f"{n / 1e6:.3g}"


def safetensors_header(path: Path, folder: Path, what: str = "model folder") -> dict:
    """The JSON header of the safetensors file ``path`` (inside ``folder``), the file checked to be as long
    as the header says; a :class:`BadModelFolder` naming the file otherwise."""
    name, size = path.relative_to(folder), path.stat().st_size
    where = f"{what} {folder}: {name}"
    if size < 8:
        raise BadModelFolder(f"{where} is truncated ({size} bytes; a safetensors file has at least an 8-byte header)")
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        if length > MAX_HEADER:
            raise BadModelFolder(f"{where} is not a safetensors file (its first 8 bytes are no header length)")
        if 8 + length > size:
            raise BadModelFolder(f"{where} is truncated in its header (read {size} of at least {8 + length} bytes)")
        try:
            header = json.loads(f.read(length))
            ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            raise BadModelFolder(f"{where} is not a safetensors file (its header is not safetensors' JSON)") from None
    expected = 8 + length + max(ends, default=0)
    if size < expected:
        raise BadModelFolder(f"{where} is truncated (read {megabytes(size)} of {megabytes(expected)} MB)")
    return header


def check_weight_files(folder: Path, what: str = "model folder") -> None:
    """Every safetensors file of ``folder`` and its component sub-folders whole (:func:`safetensors_header`)."""
    for path in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*/*.safetensors")):
        safetensors_header(path, folder, what)


def mismatch_message(folder: Path, error: BaseException) -> str | None:
    """``error`` as "config.json disagrees with the weights" naming the component, tensor and shapes, when
    it is diffusers' or torch's shape-mismatch error; else None."""
    text = str(error)
    found = next((m for pattern in MISMATCH if (m := pattern.search(text))), None)
    if found is None:
        return None
    key, in_file, in_model = found["key"], found["file"], found["model"]
    for path in sorted(folder.glob("*/*.safetensors")):
        try:
            header = safetensors_header(path, folder)
        except BadModelFolder:
            continue
        if key in header and str(header[key].get("shape")).replace(" ", "") == in_file.replace(" ", ""):
            part = path.parent.name
            return (
                f"model folder {folder}: {part}/config.json does not match {part}/{path.name}: {key} is "
                f"{in_file} in the weights but {in_model} by the config (a config from another model?)"
            )
    return f"model folder {folder}: a config.json does not match its weights: {key} is {in_file} in the weights but {in_model} by the config"


def load_error(folder: Path, error: BaseException, what: str = "model folder") -> CrossattnError:
    """The :class:`BadModelFolder` for ``error``, raised while diffusers loaded ``folder``: a shape mismatch
    named (:func:`mismatch_message`), else diffusers' own words on one line."""
    if isinstance(error, CrossattnError):
        return error
    message = mismatch_message(folder, error) if what == "model folder" else None
    if message is None:
        words = "; ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__
        message = f"{what} {folder} cannot be loaded: {words}"
    return BadModelFolder(message)
