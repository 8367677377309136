"""Bounded, float32 recording (``crossattn.attention.scores``): chunked equals whole, half precision within a stated
tolerance of float32, and no chunk allocates more than the budget (tensor sizes tracked op by op)."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from crossattn.attention import scores
from crossattn.attention.scores import Chunking, joint_block, log_sum_exp
from crossattn.attention.trace import trace

from .family_pipelines import build_family, sample

#: Maps of a half-precision model are within this of the same model's float32 maps (probabilities, 0..1), everywhere.
#: Measured on the tiny Flux below (largest map value 0.11): bfloat16 0.0011, float16 0.0003 — the model's own
#: rounding (8 / 11 bits of mantissa in its activations); the scores themselves are float32.
HALF_TOLERANCE = {torch.bfloat16: 5e-3, torch.float16: 1e-3}


def reference(q, k, keys: slice):
    """The whole block ``softmax(q·kᵀ/√d)[..., keys]`` in float64, ``(R, H, N, K)``."""
    probs = (q.double() @ k.double().transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(-1)
    return probs[..., keys]


def qk(dtype=torch.float32, rows=2, heads=4, queries=96, keys=40, width=8):
    torch.manual_seed(0)
    q, k = torch.randn(rows, heads, queries, width), torch.randn(rows, heads, keys, width)
    return q.to(dtype), k.to(dtype)


@pytest.mark.parametrize("per_head", [False, True])
def test_chunked_blocks_equal_the_whole_block(per_head):
    q, k = qk()
    lse = log_sum_exp(q, k, 8**-0.5)
    whole = joint_block(q, k[:, :, 8:], lse, per_head, budget=2**30)  # one chunk
    plan = Chunking.plan((2, 4, 96, 32), 8, False, budget=2048)
    assert plan.queries < 96  # the small budget does cut the block
    chunked = joint_block(q, k[:, :, 8:], log_sum_exp(q, k, 8**-0.5, budget=2048), per_head, budget=2048)
    assert chunked.shape == ((2, 4, 96, 32) if per_head else (2, 1, 96, 32)) and chunked.dtype == torch.float32
    assert torch.allclose(chunked, whole, rtol=1e-6, atol=1e-8)  # the same arithmetic per element, up to the last bit
    expected = reference(q, k, slice(8, None))
    assert torch.allclose(whole.double(), expected if per_head else expected.mean(1, keepdim=True), atol=1e-6)


def test_heads_are_split_only_where_the_upcast_keys_overflow_and_then_still_agree():
    q, k = qk(torch.bfloat16, keys=512, width=16)
    budget = 2 * (2 * 2 * 512 * 16 * 4)  # float32 keys of 2 rows × 2 heads take half
    assert Chunking.plan((2, 4, 96, 512), 16, upcast=True, budget=budget).heads == 2
    assert Chunking.plan((2, 4, 96, 512), 16, upcast=False, budget=budget).heads == 4  # float32: no copy, all heads
    lse = log_sum_exp(q, k, 0.25)
    split = joint_block(q, k, lse, per_head=False, budget=budget)
    whole = joint_block(q, k, lse, per_head=False, budget=2**30)
    assert torch.allclose(split, whole, atol=1e-7)  # the mean summed in two head groups


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_are_scored_in_float32(dtype):
    q, k = qk(dtype)
    block = joint_block(q, k, log_sum_exp(q, k, 8**-0.5), per_head=True)
    assert block.dtype == torch.float32
    assert torch.allclose(block.double(), reference(q, k, slice(None)), atol=1e-6)  # of the same half inputs
    assert torch.allclose(block.sum(-1), torch.ones(()), atol=1e-5)


class Allocations(TorchDispatchMode):
    """Bytes of every new tensor an op makes (outputs that share no input's storage)."""

    def __init__(self):
        super().__init__()
        self.sizes: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.sizes.append(t.untyped_storage().nbytes())
        return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_no_chunk_allocates_more_than_the_budget(dtype):
    """A (1, 4, 1024, 256) block is 4 MiB of float32 scores; with a 256 KiB budget no tensor but the kept mean
    (1 MiB, what the store holds) is larger than the budget, where the whole block would make 4 MiB ones."""
    q, k = qk(dtype, rows=1, heads=4, queries=1024, keys=256, width=16)
    lse = log_sum_exp(q, k, 0.25, budget=2**30)
    budget = 256 * 2**10
    with Allocations() as chunked:
        kept = joint_block(q, k, lse, per_head=False, budget=budget)
    with Allocations() as whole:
        joint_block(q, k, lse, per_head=False, budget=2**30)
    kept_bytes = kept.numel() * 4
    assert max(whole.sizes) >= 4 * kept_bytes  # the whole block: (1, 4, 1024, 256) float32
    assert max(s for s in chunked.sizes if s != kept_bytes) <= budget


def test_traced_maps_with_a_tiny_chunk_budget_equal_the_default(monkeypatch):
    """Through the tracer: Flux's joint capture, both kinds, every head (the U-Net's fused capture: the next test)."""
    pipe = build_family("flux")

    def maps():
        with trace(pipe, kind="both", per_head=True) as tracer:
            sample(pipe, ["a red circle"], output_type="latent", height=64, width=64)
        return tracer.maps().tensors

    default = maps()
    monkeypatch.setattr(scores, "CHUNK_BYTES", 1024)
    chunked = maps()
    assert default.keys() == chunked.keys()
    for layer, tensor in default.items():
        assert torch.allclose(chunked[layer], tensor, atol=1e-6), layer


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_half_precision_flux_maps_are_within_the_stated_tolerance_of_float32(half):
    """The tiny Flux transformer (8×8 image tokens, 16 text tokens) traced in float32 and in ``half``."""
    transformer = build_family("flux").transformer
    rows, cols = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    img_ids = torch.stack([torch.zeros(64), rows.flatten(), cols.flatten()], dim=1)  # (N, 3): 0, row, column
    torch.manual_seed(0)
    states = {"hidden_states": torch.randn(1, 64, 16), "encoder_hidden_states": torch.randn(1, 16, 32),
              "pooled_projections": torch.randn(1, 16)}  # fmt: skip
    ids = {"timestep": torch.tensor([0.5]), "img_ids": img_ids, "txt_ids": torch.zeros(16, 3)}

    def maps(dtype):
        transformer.to(dtype)
        with torch.no_grad(), trace(transformer, kind="both") as tracer:
            transformer(**{name: x.to(dtype) for name, x in states.items()}, **ids)
        return tracer.maps().tensors

    full, low = maps(torch.float32), maps(half)
    for layer, tensor in full.items():
        assert low[layer].dtype == torch.float32
        assert (low[layer] - tensor).abs().max() <= HALF_TOLERANCE[half], layer


@pytest.mark.parametrize(("per_head", "masked"), [(False, True), (True, True), (False, False)])
def test_a_unet_layer_is_recorded_in_chunks_like_get_attention_scores(per_head, masked, monkeypatch):
    """The fused capture (with a key mask or none), the store keeping the last two of four rows (the conditional half
    of a guided batch of two images), a 64-byte budget (one query row a chunk): the maps are the reference
    probabilities."""
    from diffusers.models.attention_processor import Attention

    from crossattn.attention.processor import CaptureProcessor
    from crossattn.attention.store import AttentionStore

    torch.manual_seed(0)
    attn = Attention(query_dim=16, cross_attention_dim=12, heads=2, dim_head=8)
    hidden, text = torch.randn(4, 20, 16), torch.randn(4, 7, 12)  # (B, N, C), (B, T, D)
    mask = torch.zeros(4, 1, 7)
    mask[:, :, 5:] = -10000.0 if masked else 0.0  # hide the last two text tokens
    store = AttentionStore(per_head=per_head)
    store.reset(images=2)
    monkeypatch.setattr(scores, "CHUNK_BYTES", 64)
    with torch.no_grad():
        attn.set_processor(CaptureProcessor("layer", store, mode="fused"))
        attn(hidden, encoder_hidden_states=text, attention_mask=mask if masked else None)
        q = attn.head_to_batch_dim(attn.to_q(hidden[2:]))  # (2*h, N, d): the kept rows
        k = attn.head_to_batch_dim(attn.to_k(text[2:]))  # (2*h, T, d)
        expected = attn.get_attention_scores(q, k, attn.prepare_attention_mask(mask[2:], 7, 2)).view(2, 2, 20, 7)
    got = store.tensor("layer")[0]  # (R, heads or 1, N, T)
    assert store.layers["layer"].heads == 2 and (got[..., 5:].max() < 1e-6) == masked
    torch.testing.assert_close(got, expected if per_head else expected.mean(1, keepdim=True), rtol=1e-5, atol=1e-7)
