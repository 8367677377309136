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

import torch
import torch.nn.functional as F

from ..attention.record import Record, mean_over_heads
from ..models.tokenizer import WordSpans


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
        attn = mean_over_heads(probs, heads)  # (B, T, N)
        side = round(attn.shape[-1] ** 0.5)
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
    """Caption word masks → per-token masks, ``(T, H, W)``, for a padded, truncated token sequence."""

    def __init__(self, tokenizer, max_length: int):
        self.max_length = max_length
        self.spans = WordSpans(tokenizer, max_length)

    def __call__(self, caption: str, word_masks: torch.Tensor) -> torch.Tensor:
        """``word_masks`` ``(W, H, W')``: row ``i`` is word ``i``'s mask (zeros for words with no object)."""
        out = torch.zeros(self.max_length, *word_masks.shape[1:], dtype=torch.uint8)  # (T, H, W)
        for i, (start, stop) in enumerate(self.spans(caption)[: word_masks.shape[0]]):
            out[start:stop] = word_masks[i]  # an empty span (truncated word) sets nothing
        return out
