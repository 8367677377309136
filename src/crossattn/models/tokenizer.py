"""The real CLIP BPE tokenizer, built from OpenAI's merges file and loaded with transformers.

No machine of this project can download from a model hub, so the two files a CLIP tokenizer
needs (``vocab.json`` and ``merges.txt``) are built once from ``bpe_simple_vocab_16e6.txt.gz``
(the file OpenAI's CLIP ships, MIT licence) and stored in the model folder's ``tokenizer/``,
exactly where a Stable Diffusion folder keeps them. The construction follows CLIP's own
``SimpleTokenizer`` (openai/CLIP ``clip/simple_tokenizer.py``):

vocabulary = 256 byte symbols, the same 256 with ``</w>``, one entry per merge, then
``<|startoftext|>`` (49406) and ``<|endoftext|>`` (49407): 49,408 tokens in all.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from . import PRETRAINED_DIR

#: How many merges CLIP uses: 49152 - 256 - 2 lines after the header line.
NUM_MERGES = 49152 - 256 - 2
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
VOCAB_SIZE = 49408


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


def read_merges(bpe_gz: str | Path) -> list[str]:
    """The merge lines of OpenAI's ``bpe_simple_vocab_16e6.txt.gz``, header line dropped."""
    path = Path(bpe_gz)
    if not path.is_file():
        raise FileNotFoundError(f"BPE merges file not found: {path}")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    merges = lines[1 : NUM_MERGES + 1]
    if len(merges) != NUM_MERGES:
        raise ValueError(f"{path} has {len(merges)} merges; CLIP's file has {NUM_MERGES}")
    return merges


def build_vocab(merges: list[str]) -> dict[str, int]:
    """CLIP's token → id table, in the order CLIP's ``SimpleTokenizer`` builds it."""
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols]
    tokens += ["".join(merge.split()) for merge in merges]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {token: i for i, token in enumerate(tokens)}


def write_tokenizer_files(bpe_gz: str | Path, out_dir: str | Path) -> Path:
    """Write ``vocab.json``, ``merges.txt`` and the tokenizer configs into ``out_dir``.

    The last step loads a ``CLIPTokenizer`` from the two files and saves it with
    ``save_pretrained``, so the folder loads with both ``CLIPTokenizer`` and ``CLIPTokenizerFast``.
    """
    from transformers import CLIPTokenizer

    merges = read_merges(bpe_gz)
    vocab = build_vocab(merges)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_text = "#version: 0.2\n" + "\n".join(merges) + "\n"
    (out / "merges.txt").write_text(merges_text, encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "unk_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,  # Stable Diffusion 1.x pads with <|endoftext|>
        "model_max_length": 77,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    # Loading from the files (not the constructor, whose signature differs across transformers
    # versions) and saving writes the configs in the installed version's format. The 3.6 MB
    # tokenizer.json it also writes is dropped: it is rebuilt from the two files on load, and the
    # default model folder must stay small.
    CLIPTokenizer.from_pretrained(out).save_pretrained(out)
    (out / "tokenizer.json").unlink(missing_ok=True)
    return out


def default_tokenizer_dir() -> Path:
    """The tokenizer folder shipped inside the package (beside the default model)."""
    return PRETRAINED_DIR / "tokenizer"


def load_tokenizer(path: str | Path | None = None, max_length: int | None = None, fast: bool = False):
    """Load a CLIP tokenizer from ``path`` (default: the shipped one), optionally with a new max length."""
    from transformers import CLIPTokenizer, CLIPTokenizerFast

    folder = Path(path) if path is not None else default_tokenizer_dir()
    if not (folder / "vocab.json").is_file():
        raise FileNotFoundError(f"no CLIP tokenizer (vocab.json) in {folder}")
    cls = CLIPTokenizerFast if fast else CLIPTokenizer
    kwargs = {} if max_length is None else {"model_max_length": max_length}
    return cls.from_pretrained(folder, **kwargs)


class WordSpans:
    """The token positions each whitespace-separated word of a caption covers, ``[(start, stop), ...]``.

    The CLIP BPE tokenizes whitespace-separated words independently, so word ``w`` covers the
    tokens after the start token and the tokens of the words before it. Spans are clipped so the
    end token (position ``max_length - 1``) belongs to no word: a truncated word's span is empty.
    Word token counts are cached (captions repeat their words).
    """

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer, self.max_length = tokenizer, max_length
        self.lengths: dict[str, int] = {}

    def word_length(self, word: str) -> int:
        if word not in self.lengths:
            self.lengths[word] = len(self.tokenizer(word, add_special_tokens=False).input_ids)
        return self.lengths[word]

    def __call__(self, caption: str) -> list[tuple[int, int]]:
        spans, start, last = [], 1, self.max_length - 1  # start after <|startoftext|>
        for word in caption.split():
            stop = max(start, min(start + self.word_length(word), last))  # empty once past the end token
            spans.append((start, stop))
            start = stop
        return spans


def copy_bpe_files(init_from: str | None, tokenizer_dir: Path) -> None:
    """Put ``vocab.json`` + ``merges.txt`` beside the saved tokenizer, as in a Stable Diffusion folder.

    transformers 5 saves only ``tokenizer.json``; the BPE files are copied from the folder the
    tokenizer came from (the starting pipeline's, else the one shipped with the package).
    """
    import shutil

    source = Path(init_from) / "tokenizer" if init_from else default_tokenizer_dir()
    if not source.is_dir():
        source = default_tokenizer_dir()
    for name in ("vocab.json", "merges.txt"):
        if (source / name).is_file() and not (tokenizer_dir / name).exists():
            shutil.copy2(source / name, tokenizer_dir / name)
