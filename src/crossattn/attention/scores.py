"""Recorded probabilities in bounded chunks, summed in float32: what a layer's capture adds to the store.

A traced layer hands the store the mean over heads (or every head, with ``per_head``) of a block of its
softmax, ``(R, 1 or H, N, K)``: R kept batch rows, N image queries, K keys of the block. Built at once, the
block's scores would be ``(R, H, N, K)`` float32 — and its exponential a second such tensor: at Flux's
1024×1024 (N = 4096 image tokens, H = 24 heads) 201 MB each for the 512 text keys, 1.6 GB each for the
4096 image keys of the self-attention block, which is the out-of-memory users of attention tools report.

Here the block is computed a few query rows at a time (all heads of those rows; fewer heads only where
the float32 copy of the keys alone would overflow the buffer) and each chunk's head mean is written into
one float32 output of the size the store keeps. A chunk holds at most :data:`CHUNK_BYTES`: 32 MiB, under
1 % of the smallest real-size denoiser's resident memory (about 4 GB for one Flux double block at
1024², ``benchmarks/realsize.py``), yet each chunk is still a GEMM of hundreds of query rows, so the
split costs no measurable time. Whatever the model's dtype (bfloat16, float16), scores are taken in
float32 from upcast chunks of q and k, and sums are float32.

Chunking over queries keeps each element's arithmetic: softmax is per query row and the mean over heads is
taken per element of a chunk as over the whole block (only the last bit may differ, where vectorised kernels
treat a shorter tensor's tail apart: within 1e-6 relative in ``tests/test_scores.py``). A block that fits in one chunk
(every block of the default model, and of SD-1.5's cross-attention at 512²) gives the same bits as before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

#: Bytes one chunk's float32 scores (and the float32 copies of its q and k) may hold; a ``budget`` of None means this.
CHUNK_BYTES = 32 * 2**20

#: ``probs(heads, queries)``: float32 probabilities ``(R, h, n, K)`` of those heads and image query rows.
ChunkProbs = Callable[[slice, slice], torch.Tensor]


@dataclass(frozen=True)
class Chunking:
    """How a ``(R, H, N, K)`` block is cut: ``heads`` heads × ``queries`` query rows per chunk."""

    heads: int
    queries: int

    @classmethod
    def plan(
        cls, shape: tuple[int, int, int, int], width: int, upcast: bool, budget: int | None = None, copies: int = 1
    ) -> Chunking:
        """The chunks of a block of ``shape`` = (R, H, N, K) from ``width``-wide q, k: all heads unless the float32
        copy of their keys (``upcast``: the model's q, k are not float32) takes over half the budget; then as many
        query rows as fit in what is left (at least one), where computing a chunk holds ``copies`` float32 tensors of
        its size at once (1 where scores turn into probabilities in place)."""
        budget = CHUNK_BYTES if budget is None else budget  # read at call time (tests set a small one)
        rows, heads, queries, keys = shape
        heads_at_once = heads
        if upcast:  # k.float(): (R, h, K, d) held for the whole head group
            heads_at_once = max(1, min(heads, (budget // 2) // max(1, rows * keys * width * 4)))
        held = rows * heads_at_once * keys * width * 4 if upcast else 0
        per_query = rows * heads_at_once * (copies * keys + (width if upcast else 0)) * 4  # scores (+ q.float())
        return cls(heads_at_once, max(1, min(queries, (budget - held) // max(1, per_query))))

    def chunks(self, heads: int, queries: int):
        """``(head slice, query slice)`` of every chunk, heads outer."""
        for h in range(0, heads, self.heads):
            for n in range(0, queries, self.queries):
                yield slice(h, min(h + self.heads, heads)), slice(n, min(n + self.queries, queries))


def reduce_heads(
    probs: ChunkProbs, shape: tuple[int, int, int, int], chunking: Chunking, per_head: bool
) -> torch.Tensor:
    """The block of ``shape`` = (R, H, N, K), chunk by chunk, as float32 ``(R, H, N, K)`` (``per_head``) or its mean
    over heads ``(R, 1, N, K)``: the only full-size tensor built, the one the store keeps."""
    rows, heads, queries, keys = shape
    out = None
    for hs, qs in chunking.chunks(heads, queries):
        chunk = probs(hs, qs)  # (R, h, n, K) float32
        if out is None:
            out = chunk.new_zeros(rows, heads if per_head else 1, queries, keys)  # (R, H or 1, N, K)
        if per_head:
            out[:, hs, qs] = chunk
        else:  # a head group's share of the mean; with all heads at once (alpha 1) exactly chunk.mean
            out[:, :, qs].add_(chunk.mean(dim=1, keepdim=True), alpha=(hs.stop - hs.start) / heads)
    return out


def log_sum_exp(q: torch.Tensor, k: torch.Tensor, scale: float, budget: int | None = None) -> torch.Tensor:
    """``logsumexp(q·kᵀ·scale)`` over every key, float32 ``(R, H, N)``, for ``(R, H, N, d)`` queries and ``(R, H, S, d)``
    keys; in chunks (where the attention kernel gave no log-sum-exp)."""
    rows, heads, queries, width = q.shape
    upcast = q.dtype != torch.float32
    chunking = Chunking.plan((rows, heads, queries, k.shape[2]), width, upcast, budget, copies=2)  # scores, exp
    lse = q.new_empty(rows, heads, queries, dtype=torch.float32)  # (R, H, N)
    for hs, qs in chunking.chunks(heads, queries):
        scores = q[:, hs, qs].float() @ k[:, hs].float().transpose(-1, -2)  # (R, h, n, S)
        lse[:, hs, qs] = torch.logsumexp(scores.mul_(scale), dim=-1)
    return lse


def joint_block(q: torch.Tensor, k: torch.Tensor, lse: torch.Tensor, per_head: bool, budget: int | None = None):
    """The block ``exp(q·kᵀ·scale − lse)`` of a joint softmax (its rows sum to the share of attention these keys get),
    head-averaged unless ``per_head``: float32 ``(R, H or 1, N, K)`` for ``(R, H, N, d)`` image queries, ``(R, H, K, d)``
    keys of the block and the queries' log-sum-exp over all keys ``(R, H, N)``."""
    rows, heads, queries, width = q.shape
    scale = width**-0.5

    def probs(hs: slice, qs: slice) -> torch.Tensor:
        scores = q[:, hs, qs].float() @ k[:, hs].float().transpose(-1, -2)  # (R, h, n, K)
        return scores.mul_(scale).sub_(lse[:, hs, qs, None].float()).exp_()  # in place: one buffer a chunk

    shape = (rows, heads, queries, k.shape[2])
    return reduce_heads(probs, shape, Chunking.plan(shape, width, q.dtype != torch.float32, budget), per_head)


def add_joint_blocks(q, k, lse, image: slice, text: slice, names: dict[str, str], sink, budget: int | None = None):
    """``sink.add`` the image→text (``names["cross"]``) and image→image (``names["self"]``) blocks of
    ``softmax(q·kᵀ·scale)`` over all keys, for ``(R, H, S, d)`` q, k of the rows the sink keeps and their log-sum-exp
    ``(R, H, S)`` (None: computed here, in chunks); each block built by :func:`joint_block`. No rows (a true-CFG call
    of the half the sink does not record): nothing is handed."""
    if q.shape[0] == 0:
        return
    q_img = q[:, :, image]  # (R, H, N, d): the image queries (a view)
    lse = log_sum_exp(q_img, k, q.shape[-1] ** -0.5, budget) if lse is None else lse[:, :, image]  # (R, H, N)
    for kind, keys in (("cross", text), ("self", image)):
        if kind in names:
            block = joint_block(q_img, k[:, :, keys], lse, sink.per_head, budget)  # (R, H or 1, N, K)
            sink.add(names[kind], block, heads=q.shape[1])


def store_behind(hand):
    """The store whose ``add`` method ``hand`` is (it takes bounded, head-reduced blocks: :func:`add_joint_blocks`),
    else None: any other callable is handed whole blocks."""
    owner = getattr(hand, "__self__", None)
    method = getattr(type(owner), "add", None)
    return (
        owner
        if method is not None and getattr(hand, "__func__", None) is method and hasattr(owner, "per_head")
        else None
    )
