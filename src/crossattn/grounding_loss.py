"""Token grounding loss: teach each object word's cross-attention to land on the object it names.

TokenCompose (Wang et al., "TokenCompose: Text-to-Image Diffusion with Token-level Supervision",
CVPR 2024) adds two terms to the diffusion loss for every caption token that has a segmentation
mask. Our procedural scenes carry an exact mask per colour and shape word, so the same terms apply
directly. Per cross-attention layer, with ``A`` the attention probabilities averaged over heads,
``(B, T, N)`` (token ``t``'s map over the layer's ``N = s²`` pixels) and ``M`` the token's mask
area-pooled to ``s × s``:

```
L_token = (1 − Σ_u A·M / Σ_u A)²       the share of the word's attention that falls on its object
L_pixel = mean_u BCE(A(u), M(u))        the object's pixels attend to the word, the others do not
```

averaged over layers and masked tokens, each sample weighted by ``√ᾱ_t`` (how much of ``x_t`` is
image rather than noise: where the object will be cannot be read from pure noise). Without it the
maps of colour words spread over the whole image (the causal CLIP encoder also carries the colour
into the shape token), and grounding IoU falls as training goes on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

#: One recorded call of a cross-attention layer: its ``(B*heads, N, T)`` probabilities and heads.
Record = tuple[torch.Tensor, int]


@contextlib.contextmanager
def record_cross_attention(unet, enabled: bool = True) -> Iterator[list[Record]]:
    """Inside, every cross-attention layer computes ``softmax(QKᵀ/√d)·V`` explicitly and appends its
    probabilities (with their graph, so a loss on them trains Q and K) to the yielded list.

    The processors in place on entry are put back on exit, also after an exception.
    """
    from .attention.layers import attention_layers, select_layers
    from .attention.processor import CaptureProcessor

    records: list[Record] = []
    if not enabled:
        yield records
        return
    base = getattr(unet, "module", unet)  # DDP wraps the model; processors live on the model itself
    saved = dict(base.attn_processors)

    def sink(_name: str, probs: torch.Tensor, heads: int) -> None:
        records.append((probs, heads))

    processors = dict(saved)
    for layer in select_layers(attention_layers(base), "cross"):
        processors[layer.key] = CaptureProcessor(layer.name, sink, mode="explicit", cache_kv=False)
    base.set_attn_processor(processors)
    try:
        yield records
    finally:
        base.set_attn_processor(dict(saved))  # the dict is consumed: pass a copy


def grounding_loss(records: list[Record], token_masks: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``L_token + L_pixel`` (see the module docstring) over every layer and masked token.

    ``token_masks`` is ``(B, T, H, W)`` in [0, 1] (all zero for a token without an object),
    ``weights`` ``(B,)``. Returns a scalar, zero when no token has a mask.
    """
    masks = token_masks.float()
    has = masks.flatten(2).sum(-1) > 0  # (B, T): tokens that name an object
    total = masks.new_zeros(())
    if not records or not has.any():
        return total
    pooled: dict[int, torch.Tensor] = {}  # side → (B, T, side²); several layers share a resolution
    for probs, heads in records:
        bh, n, t = probs.shape
        side = round(n**0.5)
        attn = probs.float().view(bh // heads, heads, n, t).mean(1).transpose(1, 2)  # (B, T, N)
        if side not in pooled:
            pooled[side] = F.adaptive_avg_pool2d(masks, side).flatten(2)  # (B, T, N): object share per pixel
        m = pooled[side]
        inside = (attn * m).sum(-1) / attn.sum(-1).clamp_min(1e-8)  # (B, T)
        token = (1.0 - inside) ** 2  # (B, T)
        pixel = F.binary_cross_entropy(attn.clamp(1e-6, 1 - 1e-6), m, reduction="none").mean(-1)  # (B, T)
        per_token = (token + pixel) * weights[:, None]  # (B, T)
        total = total + per_token[has].mean()
    return total / len(records)


def signal_weights(noise_scheduler, t: torch.Tensor) -> torch.Tensor:
    """``√ᾱ_t`` per sample, ``(B,)``: 0 at the zero-terminal-SNR end, near 1 for clean images."""
    alphas = noise_scheduler.alphas_cumprod.to(t.device)
    return alphas[t].sqrt().float()


class TokenMasks:
    """Caption word masks → per-token masks, ``(T, H, W)``, for a padded, truncated token sequence.

    The CLIP BPE tokenizes whitespace-separated words independently, so word ``w`` covers the
    tokens after the start token and the tokens of the words before it. Word token counts are cached.
    """

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer, self.max_length = tokenizer, max_length
        self.lengths: dict[str, int] = {}

    def word_length(self, word: str) -> int:
        if word not in self.lengths:
            self.lengths[word] = len(self.tokenizer(word, add_special_tokens=False).input_ids)
        return self.lengths[word]

    def __call__(self, caption: str, word_masks: torch.Tensor) -> torch.Tensor:
        """``word_masks`` ``(W, H, W')``: row ``i`` is word ``i``'s mask (zeros for words with no object)."""
        out = torch.zeros(self.max_length, *word_masks.shape[1:], dtype=torch.uint8)  # (T, H, W)
        start = 1  # after <|startoftext|>
        last = self.max_length - 1  # the end token stays unmasked, also after truncation
        for i, word in enumerate(caption.split()):
            stop = min(start + self.word_length(word), last)
            if i < word_masks.shape[0] and stop > start:
                out[start:stop] = word_masks[i]
            start = stop
        return out
