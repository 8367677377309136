"""Safe file writing: atomic writes (temp file in the same folder, then rename), no silent
overwrites, and the names and hashes every output carries."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .errors import OutputExists

#: An output would replace a file the user did not ask to replace (the family's :class:`OutputExists`).
ExistsError = OutputExists


def refuse_overwrite(paths: list[Path], overwrite: bool) -> None:
    """Raise :class:`ExistsError` listing every path that exists, unless ``overwrite``."""
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise ExistsError(f"will not overwrite existing {', '.join(existing)} (pass --overwrite to replace)")


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` then rename the temp file onto ``path``.

    A crash mid-write leaves either the old file or none, never a half-written one.
    The temp file keeps ``path``'s suffix, so writers that look at it (Pillow) still work.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp(target.parent, f".{target.stem}.", target.suffix, directory=False)
    try:
        write(Path(tmp))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target


def _new_temp(folder: Path, prefix: str, suffix: str, directory: bool) -> Path:
    """Create a new, uniquely named file or folder in ``folder`` with the umask's permissions.

    ``tempfile.mkstemp`` / ``mkdtemp`` create 0600 / 0700 whatever the umask, and the atomic rename
    would carry that onto the output; created here with mode 0666 / 0777 the umask applies as for
    any ``open``: 0644 / 0755 under the usual umask 022. Names are random, creation is exclusive.
    """
    for _ in range(100):
        tmp = folder / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            if directory:
                os.mkdir(tmp, 0o777)
            else:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"could not create a temporary name in {folder} (100 names taken)")


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temp folder beside ``path``; on success it replaces ``path`` (old one removed last).

    Used for checkpoints and model folders: an interrupted write leaves the previous folder intact.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp(target.parent, f".{target.name}.tmp-", "", directory=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    follow_umask(tmp)
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def follow_umask(folder: Path) -> None:
    """Give every file and folder under ``folder`` the umask's permissions (0644 / 0755 under umask 022).

    Libraries that write through their own temp files (transformers' and diffusers' ``save_pretrained``
    write weight shards that way) leave them 0600, which the atomic rename would carry onto the output."""
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def slugify(text: str, max_len: int = 60) -> str:
    """A file-name-safe version of a prompt: ``"A red circle!"`` → ``"a-red-circle"``."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:max_len].rstrip("-") or "unconditional"


#: files a model folder may hold that say nothing of what it computes (the model card): not hashed
UNHASHED = ("README.md",)


def folder_hash(folder: str | Path, length: int = 16) -> str:
    """SHA-256 over every file's relative path and bytes, in sorted order (content hash of a model).

    A top-level ``README.md`` (the Hugging Face model card) is left out, so editing the card does not
    change the hash that every sidecar and report records."""
    root = Path(folder)
    digest = hashlib.sha256()
    files = [p for p in root.rglob("*") if p.is_file() and p.relative_to(root).as_posix() not in UNHASHED]
    for file in sorted(files):
        digest.update(file.relative_to(root).as_posix().encode())
        with open(file, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:length]
