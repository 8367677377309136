"""``AttentionStore``: streaming aggregation of recorded attention probabilities.

Each traced layer keeps one running sum over denoising steps (heads averaged unless
``per_head``), so memory does not grow with the number of steps. Per-step detail is kept only
when ``per_step`` is asked for. Sums are float32 on the model's device; they move to the CPU once,
when the maps are built.

Batch rows and classifier-free guidance: diffusers' pipelines (and ours) run the U-Net on
``[unconditional (B), conditional (B)]`` under guidance and on ``B`` conditional rows without it.
The store is told ``B`` (the number of images) at the start of every pipeline call and picks the
rows of the requested half from the U-Net batch size it sees: ``2B`` → guided, ``B`` → unguided.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

GUIDANCE_HALVES = ("cond", "uncond", "both")


@dataclass
class LayerRecord:
    """What one layer has recorded: a running sum and, when asked, every step."""

    heads: int
    count: int = 0
    total: torch.Tensor | None = None  # (R, heads or 1, N, K) float32 running sum (aggregated mode)
    steps: list[torch.Tensor] = field(default_factory=list)  # per step (R, heads or 1, N, K) (per_step mode)


class AttentionStore:
    """Receives ``(B*heads, N, K)`` probabilities from capture processors and aggregates them."""

    def __init__(self, guidance_half: str = "cond", per_step: bool = False, per_head: bool = False):
        if guidance_half not in GUIDANCE_HALVES:
            raise ValueError(f"guidance_half {guidance_half!r}; accepted: {', '.join(GUIDANCE_HALVES)}")
        self.guidance_half = guidance_half
        self.per_step = per_step
        self.per_head = per_head
        self.images: int | None = None  # B, when a pipeline call told us; None: every row is an image
        self.guided: bool | None = None  # seen from the U-Net batch size
        self.layers: dict[str, LayerRecord] = {}

    def reset(self, images: int | None) -> None:
        """Forget everything recorded; the next U-Net calls belong to a sampling of ``images`` images."""
        self.images = images
        self.guided = None
        self.layers = {}

    def rows(self, batch: int) -> tuple[slice, list[str]]:
        """Which U-Net batch rows to keep, and the guidance half of each kept row."""
        b = self.images
        if b is None or b == batch and self.guidance_half == "cond":
            self.guided = False if b is not None else None
            return slice(0, batch), ["cond" if b is not None else "all"] * batch
        if batch == b:
            raise ValueError(
                f"guidance_half={self.guidance_half!r} but the pipeline ran without classifier-free guidance "
                f"(U-Net batch {batch} = {b} images); there is no unconditional half, use guidance_half='cond'"
            )
        if batch != 2 * b:
            raise ValueError(f"U-Net batch of {batch} rows for {b} images; expected {b} (unguided) or {2 * b} (guided)")
        self.guided = True
        if self.guidance_half == "cond":
            return slice(b, 2 * b), ["cond"] * b
        if self.guidance_half == "uncond":
            return slice(0, b), ["uncond"] * b
        return slice(0, 2 * b), ["uncond"] * b + ["cond"] * b

    def __call__(self, name: str, probs: torch.Tensor, heads: int) -> None:
        """Add one layer call's probabilities ``(B*heads, N, K)`` to the running sum."""
        batch = probs.shape[0] // heads
        self.add(name, probs.detach().view(batch, heads, *probs.shape[1:])[self.keep(batch)])  # (R, heads, N, K)

    def keep(self, batch: int) -> slice:
        """The rows of a ``batch``-row denoiser call this store keeps (a capture processor may then compute
        the probabilities of those rows only and hand them to :meth:`add`)."""
        return self.rows(batch)[0]

    def add(self, name: str, kept: torch.Tensor, heads: int | None = None) -> None:
        """Add the kept rows' probabilities ``(R, heads, N, K)`` of one layer call to its record (or, with ``heads``
        given, their mean over the layer's ``heads`` heads ``(R, 1, N, K)``, as :mod:`~crossattn.attention.scores` makes)."""
        heads = kept.shape[1] if heads is None else heads
        x = kept.detach().float()  # (R, heads, N, K)
        if not self.per_head:
            x = x.mean(dim=1, keepdim=True)  # (R, 1, N, K)
        record = self.layers.setdefault(name, LayerRecord(heads=heads))
        record.count += 1
        if self.per_step:  # every step kept (the mean is taken when read)
            record.steps.append(x.clone())  # a copy, so the model's buffer is not kept alive
        else:
            record.total = x.clone() if record.total is None else record.total.add_(x)

    def halves(self) -> list[str]:
        """The guidance half of every recorded image row (``"all"`` when no pipeline call was seen)."""
        if self.images is None:
            first = next(iter(self.layers.values()), None)
            rows = 0 if first is None else (first.steps[0] if self.per_step else first.total).shape[0]
            return ["all"] * rows
        batch = 2 * self.images if self.guided else self.images
        return self.rows(batch)[1]

    def nbytes(self) -> int:
        """Bytes held by the recorded tensors (sums and per-step copies)."""
        total = 0
        for record in self.layers.values():
            tensors = ([record.total] if record.total is not None else []) + record.steps
            total += sum(t.numel() * t.element_size() for t in tensors)
        return total

    def tensor(self, name: str) -> torch.Tensor:
        """One layer's maps on the CPU: ``(S, R, heads or 1, N, K)``; S = steps, or 1 (the mean)."""
        record = self.layers[name]
        if self.per_step:
            return torch.stack(record.steps).cpu()  # (S, R, heads or 1, N, K)
        return (record.total / record.count).unsqueeze(0).cpu()  # (1, R, heads or 1, N, K)
