"""Install a trained pipeline folder as the package's default model (``src/crossattn/pretrained``).

    python scripts/ship_default_model.py RUN/final

Checks that the folder loads as a ``CrossAttnPipeline`` from safetensors, that its weights are
fp16 (train with ``--fp16``), keeps the tokenizer as ``vocab.json`` + ``merges.txt`` (the
``tokenizer.json`` transformers rebuilds from them on load is dropped), writes ``vocabulary.json``
(the scenes grammar's words, so prompts with other words get a warning) when the run did not,
keeps the shipped mini-CLIP (``clip/``), refuses a folder over the 45 MB budget, and replaces the shipped folder atomically. Prints the
size and the content hash the sidecars will name.

    python scripts/ship_default_model.py --vocabulary-only   # (re)write only the shipped vocabulary.json
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from crossattn.files import atomic_dir, folder_hash
from crossattn.models.loading import check_model_folder, default_model_dir

BUDGET_BYTES = 45 * 1024 * 1024  # the whole shipped folder, mini-CLIP (clip/) included


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def check_fp16(folder: Path) -> None:
    from safetensors import safe_open

    for file in folder.rglob("*.safetensors"):
        with safe_open(file, framework="pt") as fh:
            dtypes = {str(fh.get_slice(k).get_dtype()) for k in fh.keys()}  # noqa: SIM118 (safe_open is not iterable)
        if dtypes != {"F16"}:
            raise ValueError(f"{file} holds {sorted(dtypes)} weights; ship fp16 (train with --fp16)")


def slim_tokenizer(folder: Path) -> None:
    """Keep ``vocab.json`` + ``merges.txt`` (1.5 MB; taken from the package's tokenizer when the run
    saved only ``tokenizer.json``, as transformers 5 does) and drop the 3.6 MB ``tokenizer.json``."""
    from crossattn.models.tokenizer import default_tokenizer_dir

    for name in ("vocab.json", "merges.txt"):
        if not (folder / name).is_file():
            shutil.copy2(default_tokenizer_dir() / name, folder / name)
    (folder / "tokenizer.json").unlink(missing_ok=True)


def ensure_vocabulary(folder: Path) -> None:
    """Keep the run's ``vocabulary.json``; a run without one trained on the scenes grammar (the
    default model's data), so write the grammar's words."""
    from crossattn.models.vocabulary import FILE_NAME, grammar_words, write_vocabulary

    if not (folder / FILE_NAME).is_file():
        write_vocabulary(folder, grammar_words(), source="the scenes grammar (crossattn.data.captions)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("final", nargs="?", help="a trained pipeline folder, e.g. RUN/final")
    parser.add_argument("--vocabulary-only", action="store_true", help="only add vocabulary.json to the shipped model")
    args = parser.parse_args()
    if args.vocabulary_only:
        ensure_vocabulary(default_model_dir())
        return
    if args.final is None:
        parser.error("give a trained pipeline folder (RUN/final), or --vocabulary-only")
    source = check_model_folder(args.final)
    if list(source.rglob("*.bin")) or list(source.rglob("*.pkl")):
        raise ValueError(f"{source} holds pickled files; only safetensors are shipped")
    check_fp16(source)
    target = default_model_dir()
    with atomic_dir(target) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        if (target / "clip").is_dir() and not (tmp / "clip").exists():  # the shipped mini-CLIP stays
            shutil.copytree(target / "clip", tmp / "clip")
        slim_tokenizer(tmp / "tokenizer")
        ensure_vocabulary(tmp)
        size = folder_size(tmp)
        if size > BUDGET_BYTES:
            raise ValueError(f"{source} is {size / 2**20:.1f} MB; the default model must stay under 45 MB")
    from crossattn.models.loading import load_pipeline

    pipe = load_pipeline()
    print(f"shipped {source} -> {target}: {size / 2**20:.1f} MB, hash {folder_hash(target)}, {type(pipe).__name__}")


if __name__ == "__main__":
    main()
