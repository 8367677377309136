"""Token alignment for prompt-to-prompt: which source tokens a target token reads, and word re-weighting.

Hertz et al., ICLR 2023, reference code ``seq_aligner``: a word swap maps token to token, a refinement
(words added or removed) aligns the two prompts and lets new target tokens keep their own attention.
Here the alignment is by word (``difflib.SequenceMatcher`` over the merged CLIP words), then by token.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field

import torch

from ..attention.words import merge_words


@dataclass
class TokenMap:
    """How one target prompt reads the source's cross-attention: ``(T, T)`` matrix ``M`` (row: source
    token, column: target token; each mapped source row sums to 1), ``(T,)`` blend ``alpha`` (1: take the
    mapped source map, 0: keep the target's own) and the changed words ``[(source words, target words)]``."""

    matrix: torch.Tensor
    alpha: torch.Tensor
    changed: list[tuple[str, str]]
    source_tokens: list[int] = field(default_factory=list)  # token positions of the changed words
    target_tokens: list[int] = field(default_factory=list)
    identity: bool = field(init=False)  # every token maps to itself (a word swap): injecting is copying

    def __post_init__(self):
        eye = torch.eye(self.matrix.shape[0], dtype=self.matrix.dtype)
        self.identity = bool(self.alpha.all()) and torch.equal(self.matrix, eye)


def prompt_words(tokenizer, prompt: str, length: int) -> tuple[list[tuple[str, list[int]]], int]:
    """The words of ``prompt`` with their token positions, and the position of its end token."""
    ids = tokenizer(prompt, truncation=True, max_length=length).input_ids
    return merge_words(tokenizer.convert_ids_to_tokens(ids)), len(ids) - 1


def align_tokens(tokenizer, source: str, target: str, length: int) -> TokenMap:
    """P2P's token mapper, by word: equal words map token to token; a replaced word spreads each of
    its source tokens' attention evenly over the target word's tokens (words pair from the end of a
    replaced block, as modifiers come first: "red" → "big blue" links red–blue, "big" is new); inserted target words keep their own attention (α = 0);
    deleted source words are dropped. The start token maps to itself; the end token and the
    padding after it map in order from each prompt's end (``length``: the text encoder's T)."""
    src, src_end = prompt_words(tokenizer, source, length)
    tgt, tgt_end = prompt_words(tokenizer, target, length)
    matrix, alpha = torch.zeros(length, length), torch.zeros(length)
    matrix[0, 0] = alpha[0] = 1.0  # <|startoftext|>

    def link(source_tokens: list[int], target_tokens: list[int]) -> None:
        if len(source_tokens) == len(target_tokens):
            matrix[source_tokens, target_tokens] = 1.0
        else:
            matrix[torch.tensor(source_tokens)[:, None], torch.tensor(target_tokens)[None, :]] = 1 / len(target_tokens)
        alpha[target_tokens] = 1.0

    changed, source_tokens, target_tokens = [], [], []
    matcher = difflib.SequenceMatcher(None, [w for w, _ in src], [w for w, _ in tgt], autojunk=False)
    for op, i0, i1, j0, j1 in matcher.get_opcodes():
        pairs = min(i1 - i0, j1 - j0)  # replaced words pair from the block's end: "red" → "big blue" links red–blue
        for (_, s_tokens), (_, t_tokens) in zip(src[i1 - pairs : i1], tgt[j1 - pairs : j1], strict=True):
            link(s_tokens, t_tokens)
        if op != "equal":
            changed.append((" ".join(w for w, _ in src[i0:i1]), " ".join(w for w, _ in tgt[j0:j1])))
            source_tokens += [i for _, idx in src[i0:i1] for i in idx]
            target_tokens += [i for _, idx in tgt[j0:j1] for i in idx]
    tail = min(length - src_end, length - tgt_end)  # end token + padding positions both prompts have
    link(list(range(src_end, src_end + tail)), list(range(tgt_end, tgt_end + tail)))
    return TokenMap(matrix, alpha, changed, source_tokens, target_tokens)


def word_weights(tokenizer, prompt: str, length: int, reweight: dict[str, float] | None) -> torch.Tensor | None:
    """``(T,)`` factors on the target's attention per token (P2P's equalizer), or None when nothing changes.

    ``ValueError`` for a word not in ``prompt`` (naming its words) or a factor that is not a finite number >= 0."""
    if not reweight:
        return None
    words, _ = prompt_words(tokenizer, prompt, length)
    weights = torch.ones(length)
    for word, factor in reweight.items():
        if isinstance(factor, bool) or not isinstance(factor, int | float) or not (0 <= factor < math.inf):
            raise ValueError(f"reweight factor for {word!r} is {factor!r}; accepted: a finite number >= 0")
        tokens = [i for w, idx in words if w == str(word).lower().strip() for i in idx]
        if not tokens:
            raise ValueError(
                f"reweighted word {word!r} is not in the prompt {prompt!r}; words are: {', '.join(w for w, _ in words)}"
            )
        weights[tokens] = float(factor)
    return weights
