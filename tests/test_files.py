"""Atomic writes respect the umask: outputs are 0644 / 0755 under umask 022, not the temp files' 0600 / 0700."""

from __future__ import annotations

import contextlib
import os
import stat

import pytest

from crossattn.files import atomic_dir, atomic_write, atomic_write_json


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_atomic_outputs_follow_the_umask(tmp_path, mask, file_mode, dir_mode):
    with umask(mask):
        png = atomic_write(tmp_path / "new" / "a.png", lambda tmp: tmp.write_bytes(b"x"))
        sidecar = atomic_write_json(tmp_path / "a.json", {"seed": 0})
        with atomic_dir(tmp_path / "model") as folder:
            (folder / "config.json").write_text("{}")
    assert mode(png) == file_mode and mode(sidecar) == file_mode
    assert mode(tmp_path / "new") == dir_mode and mode(tmp_path / "model") == dir_mode
    assert not [p for p in tmp_path.rglob(".*")], "no temp file or folder is left behind"


def test_failed_write_leaves_no_temp_file(tmp_path):
    def fail(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "a.png", fail)
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_gives_library_temp_files_the_umask(tmp_path):
    """A file another library wrote 0600 through its own temp file (save_pretrained's weights) ends 0644."""
    with umask(0o022), atomic_dir(tmp_path / "model") as tmp:
        (tmp / "unet").mkdir(mode=0o700)
        weights = tmp / "unet" / "model.safetensors"
        weights.write_bytes(b"w")
        weights.chmod(0o600)
    assert mode(tmp_path / "model") == mode(tmp_path / "model" / "unet") == 0o755
    assert mode(tmp_path / "model" / "unet" / "model.safetensors") == 0o644


def test_generate_outputs_are_world_readable(tiny_model_dir, tmp_path):
    from crossattn.cli import main

    out = tmp_path / "out"
    with umask(0o022):
        argv = ["generate", "a red circle", "--model", str(tiny_model_dir), "--out", str(out), "--steps", "1"]
        assert main([*argv, "--quiet"]) == 0
    assert mode(out) == 0o755
    assert sorted(mode(p) for p in out.iterdir()) == [0o644, 0o644]


def test_folder_hash_leaves_out_the_model_card_only(tmp_path):
    from crossattn.files import folder_hash

    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text("{}")
    before = folder_hash(tmp_path)
    (tmp_path / "README.md").write_text("---\nlicense: mit\n---\n# card")
    assert folder_hash(tmp_path) == before
    (tmp_path / "unet" / "README.md").write_text("not the card")  # only the top-level card is left out
    assert folder_hash(tmp_path) != before
