"""Feeding the training loop: a resumable, sharded batch order, caption tokenization, and the
per-micro-step random seed.

Everything random in a training step is a pure function of ``(seed, rank, position)``, where the
position is the number of micro-batches this process has consumed. A checkpoint therefore only
needs that one integer to continue exactly where it stopped: the batch order comes from
:class:`ShardedBatchSampler` started at the position, and noise, timesteps and caption dropout come
from a generator seeded with :func:`step_seed`. Nothing depends on the global RNG, which data
loaders and libraries draw from behind our back.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch


def step_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integer keys (``numpy.random.SeedSequence`` hashing)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def step_generator(*keys: int) -> torch.Generator:
    """A CPU generator for one micro-step; draw on CPU, then move, so every device sees the same numbers."""
    return torch.Generator(device="cpu").manual_seed(step_seed(*keys))


class ShardedBatchSampler:
    """An endless stream of index batches: a fresh permutation per epoch, split across processes.

    Global batch ``j`` of epoch ``e`` is ``perm_e[(j·world + rank)·B : … + B]`` with ``perm_e`` drawn
    from ``(seed, e)``, so process ``rank`` reads disjoint items from its peers and the stream can be
    restarted at any ``start`` (micro-batches already consumed by this process) without replaying it.
    """

    def __init__(self, length: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1, start: int = 0):
        per_step = batch_size * world_size
        if length < per_step:
            raise ValueError(
                f"the dataset has {length} items, fewer than one step's {per_step} "
                f"(batch size {batch_size} x {world_size} processes); use a smaller batch size or more data"
            )
        self.length, self.batch_size, self.seed = length, batch_size, seed
        self.rank, self.world_size, self.start = rank, world_size, start
        self.batches_per_epoch = length // per_step  # the remainder of each epoch is dropped

    def permutation(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.length, generator=step_generator(self.seed, epoch))

    def __iter__(self) -> Iterator[list[int]]:
        position, epoch, perm = self.start, -1, None
        while True:
            e, j = divmod(position, self.batches_per_epoch)
            if e != epoch:
                epoch, perm = e, self.permutation(e)
            first = (j * self.world_size + self.rank) * self.batch_size
            yield perm[first : first + self.batch_size].tolist()
            position += 1


class CaptionCollate:
    """Stack images and tokenize captions (padded to the text encoder's length), caching ids per caption.

    Procedural captions repeat a lot, so the cache makes tokenization free after the first few batches.
    Items with ``word_masks`` (procedural scenes asked for them) also give ``token_masks``
    ``(B, T, H, W)`` for the grounding loss. Items of cached latents (latent families) are stacked as
    ``latents``; a ``tokenizer_2`` (SDXL's second CLIP tower) adds ``input_ids_2``; items with a
    ``loss_weight`` (prior images) give ``loss_weights`` ``(B,)``, 1 for items without one.
    """

    def __init__(self, tokenizer, max_length: int, tokenizer_2=None):
        from .grounding_loss import TokenMasks

        self.tokenizer, self.max_length, self.tokenizer_2 = tokenizer, max_length, tokenizer_2
        self.cache: dict[tuple[int, str], list[int]] = {}
        self.token_masks = TokenMasks(tokenizer, max_length)

    def ids(self, text: str, second: bool = False) -> list[int]:
        key = (int(second), text)
        if key not in self.cache:
            tokenizer = self.tokenizer_2 if second else self.tokenizer
            self.cache[key] = tokenizer(
                text, padding="max_length", max_length=self.max_length, truncation=True
            ).input_ids
        return self.cache[key]

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        key = "latents" if "latents" in items[0] else "pixel_values"
        pixels = torch.stack([torch.as_tensor(item[key], dtype=torch.float32) for item in items])
        ids = torch.tensor([self.ids(item["text"]) for item in items], dtype=torch.long)
        batch = {key: pixels, "input_ids": ids}  # (B, C, H, W), (B, T)
        if self.tokenizer_2 is not None:
            batch["input_ids_2"] = torch.tensor([self.ids(item["text"], True) for item in items], dtype=torch.long)
        if "word_masks" in items[0]:
            masks = [self.token_masks(item["text"], torch.as_tensor(item["word_masks"])) for item in items]
            batch["token_masks"] = torch.stack(masks)  # (B, T, H, W) uint8
        if any("loss_weight" in item for item in items):  # prior images' weight; the user's images: 1
            batch["loss_weights"] = torch.tensor([float(item.get("loss_weight", 1.0)) for item in items])  # (B,)
        return batch
