"""How far a word's attention map moved between two models, and how concentrated it is: the two numbers per
word that fine-tuning's validation logs (:mod:`crossattn.training.validation`) and that ``crossattn maps --lora
--compare-base``, its ``.maps.html`` and the explorer show beside the base model's maps
(:mod:`crossattn.sampling.compare`).

- **moved**: the Jensen–Shannon divergence (bits, in [0, 1]) between the word's map, normalised to sum to 1,
  and the base model's (Lin, 1991, "Divergence measures based on the Shannon entropy"). Chosen over 1 − IoU of
  the top-τ regions because it needs no threshold (on 16×16 to 32×32 maps a top-τ region gains or loses whole
  pixels at the cut, so IoU jumps in steps), it counts where all of the mass went rather than only the top
  region, is symmetric, bounded, and 0 exactly when the maps agree.
- **concentration**: the share of the map's mass in its top 10 % of pixels (0.1: spread evenly, 1: all of it
  in a tenth of the image); a word that found its object rises.
"""

from __future__ import annotations

import torch

TOP_SHARE = 0.10  # concentration: the share of pixels whose mass is counted


def normalised(heat: torch.Tensor) -> torch.Tensor:
    """``heat`` ``(H, W)`` as a distribution over pixels (float64, sums to 1; uniform if it is all zero)."""
    flat = heat.detach().double().flatten().clamp(min=0)  # (H·W,)
    total = flat.sum()
    return flat / total if total > 0 else torch.full_like(flat, 1.0 / flat.numel())


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> float:
    """Jensen–Shannon divergence in bits (0 … 1) of two maps, each normalised first."""
    p, q = normalised(p), normalised(q)
    m = (p + q) / 2

    def kl(a: torch.Tensor) -> torch.Tensor:
        keep = a > 0
        return (a[keep] * (a[keep] / m[keep]).log2()).sum()

    return float(((kl(p) + kl(q)) / 2).clamp(0.0, 1.0))


def top_share(heat: torch.Tensor, share: float = TOP_SHARE) -> float:
    """The share of a map's mass in its top ``share`` of pixels."""
    p = normalised(heat)
    k = max(1, round(share * p.numel()))
    return float(p.topk(k).values.sum())


def word_numbers(base, tuned, words: list[str]) -> dict[str, dict[str, float]]:
    """Per word of ``words``: ``moved`` (JS divergence from the base map) and ``concentration`` of the tuned
    and the base map; ``base`` and ``tuned`` are one image's :class:`~crossattn.attention.maps.AttentionMaps`."""
    numbers = {}
    for word in words:
        b, t = base.word_map(word), tuned.word_map(word)  # (H, W) each
        numbers[word] = {
            "moved": js_divergence(b, t),
            "concentration": top_share(t),
            "base_concentration": top_share(b),
        }
    return numbers
