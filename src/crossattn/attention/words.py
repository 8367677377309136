"""Tokens → words: which prompt tokens make up each word (CLIP BPE marks a word's last token with ``</w>``).

Its own module, free of torch, because the maps, the HTML page, the token alignment of the control
and the grounding evaluation all read it, and none of them should import another to get it.
"""

from __future__ import annotations

SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
WORD_END = "</w>"


def merge_words(tokens: list[str]) -> list[tuple[str, list[int]]]:
    """Merge CLIP BPE tokens into words: a word ends at a token ending in ``</w>``.

    ``['<|startoftext|>', 'a</w>', 'cir', 'cle</w>', '<|endoftext|>']`` → ``[('a', [1]), ('circle', [2, 3])]``.
    Start/end tokens are not words.
    """
    words, pieces, indices = [], [], []
    for i, token in enumerate(tokens):
        if token in SPECIAL_TOKENS:
            continue
        pieces.append(token.removesuffix(WORD_END))
        indices.append(i)
        if token.endswith(WORD_END):
            words.append(("".join(pieces), indices))
            pieces, indices = [], []
    if pieces:  # a prompt cut off mid-word
        words.append(("".join(pieces), indices))
    return words
