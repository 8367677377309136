"""Tokens → words: which prompt tokens make up each word, per tokenizer.

CLIP's BPE marks a word's last token with ``</w>``; T5's and Gemma's SentencePiece mark a word's first
piece with ``▁``; the byte-level BPE of GPT-2-style LLM tokenizers (Qwen2, Qwen3, Mistral's Tekken) with
``Ġ`` (the space byte), its pieces spelled one character a byte. Joint-attention models (SD3) feed both encoders' tokens in one sequence: ``encoders``
names each token's encoder, and each run of one encoder's tokens is merged by its own rule.

Its own module, free of torch, because the maps, the HTML page, the token alignment of the control
and the grounding evaluation all read it, and none of them should import another to get it.
"""

from __future__ import annotations

import functools

SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>", "</s>", "<pad>")
WORD_END = "</w>"
WORD_START = "▁"
#: GPT-2's byte-level spelling of a leading space: starts a word in Qwen's and Mistral's tokens
BYTE_WORD_START = "Ġ"
#: encoder name of keys that are no token of the prompt (SD3's zeros without T5, an LLM's chat template)
NO_ENCODER = "none"


def merge_words(tokens: list[str], encoders: list[str] | None = None) -> list[tuple[str, list[int]]]:
    """Merge tokens into words: ``(word, token indices)`` in order, special and padding tokens left out;
    words lower-cased, as CLIP's tokenizer does (T5's keeps the case).

    ``['<|startoftext|>', 'a</w>', 'cir', 'cle</w>', '<|endoftext|>']`` → ``[('a', [1]), ('circle', [2, 3])]``;
    ``['▁a', '▁cir', 'cle', '</s>']`` → ``[('a', [0]), ('circle', [1, 2])]``. With ``encoders`` (one
    name per token) each encoder's run of tokens is merged apart, so no word spans two encoders.
    """
    encoders = encoders or [""] * len(tokens)
    words, start = [], 0
    for end in range(1, len(tokens) + 1):
        if end == len(tokens) or encoders[end] != encoders[start]:
            if encoders[start] != NO_ENCODER:
                words += _merge_run(tokens, range(start, end))
            start = end
    return words


def primary_words(tokens: list[str], encoders: list[str] | None = None) -> list[tuple[str, list[int]]]:
    """:func:`merge_words` of the first encoder that has words (the prompt once, though SD3 reads it twice)."""
    spans = merge_words(tokens, encoders)
    if not encoders or not spans:
        return spans
    first = encoders[spans[0][1][0]]
    return [(word, idx) for word, idx in spans if encoders[idx[0]] == first]


def _merge_run(tokens: list[str], positions: range) -> list[tuple[str, list[int]]]:
    """One encoder's tokens merged: SentencePiece (a ``▁`` piece starts a word), byte-level BPE (a ``Ġ`` piece
    starts one) or CLIP's BPE (``</w>`` ends one)."""
    if any(tokens[i].startswith(BYTE_WORD_START) for i in positions):
        return _merge_byte_level(tokens, positions)
    pieces_style = any(tokens[i].startswith(WORD_START) for i in positions)
    words, pieces, indices = [], [], []
    for i in positions:
        token = tokens[i]
        if token in SPECIAL_TOKENS:
            continue
        if pieces_style and token.startswith(WORD_START) and pieces:
            words.append(("".join(pieces), indices))
            pieces, indices = [], []
        pieces.append(token.removeprefix(WORD_START).lower() if pieces_style else token.removesuffix(WORD_END))
        indices.append(i)
        if not pieces_style and token.endswith(WORD_END):
            words.append(("".join(pieces), indices))
            pieces, indices = [], []
    if pieces:  # SentencePiece's last word, or a prompt cut off mid-word
        words.append(("".join(pieces), indices))
    if not pieces_style:
        words = [(bpe_text(word), idx) for word, idx in words]
    return [(word, idx) for word, idx in words if word]


def _merge_byte_level(tokens: list[str], positions: range) -> list[tuple[str, list[int]]]:
    """Byte-level BPE tokens (``['a', 'Ġgreen', 'Ġtri', 'angle']``) merged into lower-cased words: a ``Ġ`` piece
    (or the run's first) starts a word; pieces that spell no letter or digit (punctuation) end one and are no word."""
    words: list[tuple[str, list[int]]] = []
    for i in positions:
        token = tokens[i]
        if token in SPECIAL_TOKENS:
            continue
        text = bpe_text(token).strip()
        if not any(c.isalnum() for c in text):
            words.append(("", []))  # a word ends here (the empty one is dropped below)
            continue
        if token.startswith(BYTE_WORD_START) or not words or not words[-1][0]:
            words.append(("", []))
        word, indices = words[-1]
        words[-1] = (word + text.lower(), [*indices, i])
    return [(word, idx) for word, idx in words if word]


def bpe_text(word: str) -> str:
    """A byte-level BPE word back as text: CLIP's tokens spell each UTF-8 byte as one printable character
    (GPT-2's ``bytes_to_unicode``), so ``'é'`` is the token text ``'Ã©'``. ASCII letters spell
    themselves, so only other words are decoded (and the table imported)."""
    if word.isascii():
        return word
    decoder = _byte_decoder()
    if not all(c in decoder for c in word):
        return word  # not byte-level BPE text
    return bytes(decoder[c] for c in word).decode("utf-8", errors="replace")


@functools.cache
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte → character table, inverted (built once)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {c: b for b, c in bytes_to_unicode().items()}
