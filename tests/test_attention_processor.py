"""The capture processor against diffusers' reference processors and ``get_attention_scores``."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

from crossattn.attention.processor import CaptureProcessor


def make_attention(cross: bool) -> Attention:
    torch.manual_seed(0)
    return Attention(query_dim=16, cross_attention_dim=12 if cross else None, heads=2, dim_head=8)


def inputs(cross: bool):
    torch.manual_seed(1)
    hidden = torch.randn(3, 20, 16)  # (B, N, C)
    text = torch.randn(3, 7, 12) if cross else None  # (B, T, D)
    return hidden, text


class Sink:
    def __init__(self):
        self.calls = []

    def __call__(self, name, probs, heads):
        self.calls.append((name, probs, heads))


@pytest.mark.parametrize("cross", [True, False])
def test_probabilities_equal_get_attention_scores(cross):
    attn, (hidden, text) = make_attention(cross), inputs(cross)
    sink = Sink()
    attn.set_processor(CaptureProcessor("layer", sink, mode="explicit"))
    attn(hidden, encoder_hidden_states=text)
    source = hidden if text is None else text
    q = attn.head_to_batch_dim(attn.to_q(hidden))  # (B*h, N, d)
    k = attn.head_to_batch_dim(attn.to_k(source))  # (B*h, K, d)
    expected = attn.get_attention_scores(q, k, None)  # (B*h, N, K)
    ((name, probs, heads),) = sink.calls
    assert (name, heads) == ("layer", 2)
    assert probs.shape == (3 * 2, 20, 7 if cross else 20)
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(probs.sum(-1), torch.ones(6, 20), atol=1e-5, rtol=0)


@pytest.mark.parametrize("cross", [True, False])
@pytest.mark.parametrize(("mode", "reference"), [("explicit", AttnProcessor), ("fused", AttnProcessor2_0)])
def test_output_equals_reference_processor(cross, mode, reference):
    attn, (hidden, text) = make_attention(cross), inputs(cross)
    with torch.no_grad():
        attn.set_processor(reference())
        expected = attn(hidden, encoder_hidden_states=text)
        other = attn(hidden, encoder_hidden_states=text)
        attn.set_processor(CaptureProcessor("layer", Sink(), mode=mode))
        got = attn(hidden, encoder_hidden_states=text)
    assert torch.equal(expected, other)
    assert torch.equal(got, expected)  # the same kernel as the processor it stands in for: bit for bit
    for ref in (AttnProcessor, AttnProcessor2_0):  # and within 1e-5 of either reference
        attn.set_processor(ref())
        with torch.no_grad():
            torch.testing.assert_close(got, attn(hidden, encoder_hidden_states=text), atol=1e-5, rtol=0)


def test_text_kv_cache_is_reused_only_for_the_same_unchanged_tensor():
    attn, (hidden, text) = make_attention(True), inputs(True)
    capture = CaptureProcessor("layer", Sink(), mode="fused", cache_kv=True)
    attn.set_processor(capture)
    with torch.no_grad():
        first = attn(hidden, encoder_hidden_states=text)
        cached_key = capture._kv_cache[2]
        second = attn(hidden, encoder_hidden_states=text)
        assert capture._kv_cache[2] is cached_key  # reused, not recomputed
        text.mul_(2.0)  # an in-place change must invalidate the cache
        changed = attn(hidden, encoder_hidden_states=text)
        attn.set_processor(AttnProcessor2_0())
        reference = attn(hidden, encoder_hidden_states=text)
    assert torch.equal(first, second)
    assert capture._kv_cache[2] is not cached_key
    assert torch.equal(changed, reference)


def test_attention_mask_is_applied_like_the_reference():
    attn, (hidden, text) = make_attention(True), inputs(True)
    mask = torch.zeros(3, 1, 7)
    mask[:, :, 5:] = -10000.0  # hide the last two text tokens
    sink = Sink()
    with torch.no_grad():
        attn.set_processor(CaptureProcessor("layer", sink, mode="explicit"))
        got = attn(hidden, encoder_hidden_states=text, attention_mask=mask)
        attn.set_processor(AttnProcessor())
        expected = attn(hidden, encoder_hidden_states=text, attention_mask=mask)
    assert torch.equal(got, expected)
    assert sink.calls[0][1][..., 5:].max() < 1e-6


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="explicit, fused"):
        CaptureProcessor("layer", Sink(), mode="flash")
