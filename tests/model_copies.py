"""Copies of saved pipeline folders that load faster: each CLIP tokenizer as vocab.json + merges.txt.

``save_pretrained`` (transformers 5) writes a CLIP tokenizer as one 3.6 MB ``tokenizer.json``, which
``CLIPTokenizer.from_pretrained`` reads in ~0.23 s; from the BPE files (what the shipped default model holds,
``src/crossattn/pretrained/tokenizer``) the same tokenizer loads in ~0.06 s. A fine-tuning run loads its base's
tokenizer several times (new words, prior images, the trained pipeline), so the fine-tuning tests copy their bases
this way; loading ``tokenizer.json`` folders stays covered by every other test that reads ``tiny_model_dir``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def bpe_tokenizer(folder: Path) -> None:
    """Rewrite the CLIP tokenizer in ``folder`` as vocab.json + merges.txt (its tokenizer_config.json kept: the same
    special and pad tokens), dropping tokenizer.json."""
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(folder)
    tokenizer.backend_tokenizer.model.save(str(folder))  # vocab.json, merges.txt
    (folder / "tokenizer.json").unlink()


def bpe_copy(model: str | Path, folder: str | Path, grammar: bool = False) -> Path:
    """A copy of the pipeline folder ``model`` at ``folder``, each CLIP tokenizer (``tokenizer``, ``tokenizer_2``)
    as BPE files (:func:`bpe_tokenizer`). ``grammar``: the copy speaks the scenes grammar (circle, square, triangle;
    not "ring"), so fine-tuning it draws prior images and trains "ring" as a new word."""
    from crossattn.models.vocabulary import grammar_words, write_vocabulary

    folder = Path(shutil.copytree(model, folder))
    for config in sorted(folder.glob("tokenizer*/tokenizer_config.json")):
        clip = json.loads(config.read_text()).get("tokenizer_class") == "CLIPTokenizer"
        if clip and (config.parent / "tokenizer.json").is_file():  # not already BPE files
            bpe_tokenizer(config.parent)
    if grammar:
        write_vocabulary(folder, grammar_words())
    return folder
