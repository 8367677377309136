"""Give a word the token-embedding row of another word in a model folder's CLIP text towers.

Why: the shipped default model was trained on captions that wrote "a orange circle". The grammar now
writes "an orange circle"; the BPE already has the token ``an</w>``, but its row in the shipped text
encoder was never trained. Copying the row of ``a</w>`` into it makes "an orange circle" encode exactly
as "a orange circle" did (one token each, the same positions), so the shipped model's images, maps and
scores for every caption are unchanged, byte for byte. A model trained on the new grammar learns its own
``an`` row; this script is only for folders trained before the change.

    python scripts/alias_token_rows.py src/crossattn/pretrained an=a

Every ``model.safetensors`` holding ``text_model.embeddings.token_embedding.weight`` under the folder
(``text_encoder/``, ``clip/``) is rewritten atomically (temporary file + rename), its metadata kept.
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROW_KEY = "text_model.embeddings.token_embedding.weight"


def token_id(tokenizer, word: str) -> int:
    """The single BPE token of ``word`` (as a whole word, ``word</w>``); a ``ValueError`` if it splits."""
    ids = tokenizer(word, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise ValueError(f"{word!r} is {len(ids)} tokens {ids}; only one-token words can share a row")
    return ids[0]


def alias_rows(weights: Path, pairs: list[tuple[int, int]]) -> bool:
    """Copy row ``source`` onto row ``target`` for each pair in one safetensors file; False when the
    file has no token embedding (nothing written)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from crossattn.files import atomic_write

    with safe_open(weights, "pt") as f:
        names = list(f.keys())  # safe_open is not a mapping: no `in`, no iteration
        if ROW_KEY not in names:
            return False
        metadata = f.metadata()
        tensors = {key: f.get_tensor(key) for key in names}
    rows = tensors[ROW_KEY]  # (vocab, hidden)
    for target, source in pairs:
        rows[target] = rows[source]
    atomic_write(weights, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a crossattn model folder (with tokenizer/)")
    parser.add_argument("aliases", nargs="+", help="NEW=OLD word pairs, e.g. an=a")
    args = parser.parse_args()
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(args.folder / "tokenizer")
    pairs = [tuple(token_id(tokenizer, w) for w in alias.split("=", 1)) for alias in args.aliases]
    for weights in sorted(args.folder.rglob("model.safetensors")):
        if alias_rows(weights, pairs):
            print(f"{weights}: rows {', '.join(f'{t} ← {s}' for t, s in pairs)}")


if __name__ == "__main__":
    main()
