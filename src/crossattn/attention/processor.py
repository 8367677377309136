"""The capture processor: explicit ``softmax(Q·Kᵀ/√d)`` where attention is recorded.

Installed through ``unet.set_attn_processor`` on the traced layers only. For a cross-attention
layer (``attn2``) Q comes from the image features and K, V from the text states; for a
self-attention layer (``attn1``) all three come from the image. The probabilities handed to the
store are computed exactly as ``Attention.get_attention_scores`` computes them.

The layer's output comes from the same kernel the layer used before tracing: ``probs @ V`` where
the reference ``AttnProcessor`` was installed, PyTorch's fused ``scaled_dot_product_attention``
where ``AttnProcessor2_0`` was (diffusers' default). So tracing never changes the generated image,
bit for bit, while the recorded probabilities are the explicit ones.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .scores import Chunking, reduce_heads

#: ``sink(layer_name, probs, heads)`` receives the ``(B*heads, N, K)`` probabilities of one call.
Sink = Callable[[str, torch.Tensor, int], None]


def supported_reference(processor) -> str | None:
    """``"explicit"`` / ``"fused"`` for the reference processors the capture can stand in for, else None."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    if type(processor) is AttnProcessor:
        return "explicit"
    if type(processor) is AttnProcessor2_0:
        return "fused"
    return None


def reference_processor(capture: CaptureProcessor):
    """A fresh instance of the reference processor ``capture`` stands in for (same output, no recording)."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    return AttnProcessor() if capture.mode == "explicit" else AttnProcessor2_0()


def attention_prologue(attn, hidden_states: torch.Tensor, temb=None):
    """What diffusers' ``AttnProcessor`` does before Q, K, V: spatial norm, ``(B, C, h, w)`` →
    ``(B, h*w, C)``, group norm. Returns the states ``(B, N, C)``, the residual and the 4-D shape
    ``(B, C, h, w)`` to restore (None for 3-D input); shared by every processor of ours."""
    residual = hidden_states
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    shape = None
    if hidden_states.ndim == 4:  # (B, C, h, w) → (B, h*w, C)
        shape = tuple(hidden_states.shape)
        hidden_states = hidden_states.view(shape[0], shape[1], -1).transpose(1, 2)
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    return hidden_states, residual, shape


def attention_epilogue(attn, out: torch.Tensor, residual: torch.Tensor, shape) -> torch.Tensor:
    """What diffusers' ``AttnProcessor`` does after attention: output projection and dropout, back to
    ``shape`` ``(B, C, h, w)`` when the input was 4-D, residual, rescale."""
    out = attn.to_out[1](attn.to_out[0](out))  # (B, N, C)
    if shape is not None:
        out = out.transpose(-1, -2).reshape(shape)  # (B, C, h, w)
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


def attention_probs(attn, query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``softmax(Q·Kᵀ · scale + mask)`` for ``(B*heads, N, d)`` queries and ``(B*heads, K, d)`` keys.

    The same arithmetic as ``Attention.get_attention_scores`` (``baddbmm`` with ``alpha=scale``,
    optional upcasts), so the recorded probabilities are the ones the reference processor uses.
    """
    dtype = query.dtype
    if attn.upcast_attention:
        query, key = query.float(), key.float()
    if mask is None:
        base = torch.empty(query.shape[0], query.shape[1], key.shape[1], dtype=query.dtype, device=query.device)
        beta = 0
    else:
        base, beta = mask, 1
    scores = torch.baddbmm(base, query, key.transpose(-1, -2), beta=beta, alpha=attn.scale)  # (B*h, N, K)
    if attn.upcast_softmax:
        scores = scores.float()
    return scores.softmax(dim=-1).to(dtype)  # (B*h, N, K), each row sums to 1 over K


class CaptureProcessor:
    """An attention processor that records its probabilities and returns the reference output.

    ``mode`` is ``"explicit"`` (output ``probs @ V``, as ``AttnProcessor``) or ``"fused"`` (output
    from ``F.scaled_dot_product_attention``, as ``AttnProcessor2_0``). With ``cache_kv`` the
    text K/V projections of a cross-attention layer are reused while the text states are the
    same, unmodified tensor (they do not change during one sampling); the output is identical.
    """

    def __init__(self, name: str, sink: Sink, mode: str = "fused", cache_kv: bool = True):
        if mode not in ("explicit", "fused"):
            raise ValueError(f"mode {mode!r}; accepted: explicit, fused")
        self.name = name
        self.sink = sink
        self.mode = mode
        self.cache_kv = cache_kv
        self._kv_cache: tuple | None = None  # (text tensor, its version, key, value)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **_):
        hidden_states, residual, shape = attention_prologue(attn, hidden_states, temb)  # (B, N, C)

        query = attn.to_q(hidden_states)  # (B, N, inner): queries from the image features
        key, value = self.project_kv(attn, hidden_states, encoder_hidden_states)  # (B, K, inner) each
        length = key.shape[1]  # K: text tokens (cross) or image positions (self)
        out = self.attend(attn, query, key, value, attention_mask, length)  # (B, N, inner)
        return attention_epilogue(attn, out, residual, shape)

    def project_kv(self, attn, hidden_states, encoder_hidden_states):
        """K and V, ``(B, K, inner)``: from the text states (cross) or the image (self)."""
        if encoder_hidden_states is None:  # self-attention: K, V from the image
            return attn.to_k(hidden_states), attn.to_v(hidden_states)
        version = _version(encoder_hidden_states)
        cached = self._kv_cache
        if cached is not None and cached[0] is encoder_hidden_states and version is not None and cached[1] == version:
            return cached[2], cached[3]
        text = encoder_hidden_states
        if attn.norm_cross:
            text = attn.norm_encoder_hidden_states(text)
        key, value = attn.to_k(text), attn.to_v(text)  # (B, T, inner): keys/values from the text
        if self.cache_kv and version is not None:
            # Holding the tensor itself keeps its id from being reused by another tensor.
            self._kv_cache = (encoder_hidden_states, version, key, value)
        return key, value

    def attend(self, attn, query, key, value, mask, length: int) -> torch.Tensor:
        """Record ``softmax(QKᵀ/√d)`` and return the attention output ``(B, N, inner)``."""
        batch, heads = query.shape[0], attn.heads
        d = key.shape[-1] // heads
        q = query.view(batch, -1, heads, d).transpose(1, 2)  # (B, h, N, d)
        k = key.view(batch, -1, heads, d).transpose(1, 2)  # (B, h, K, d)
        v = value.view(batch, -1, heads, d).transpose(1, 2)  # (B, h, K, d)
        if mask is not None:
            mask = attn.prepare_attention_mask(mask, length, batch)  # (B*h, 1 or N, K)
        if self.mode == "fused":  # AttnProcessor2_0 normalises q, k per head (qk_norm models)
            q = q if attn.norm_q is None else attn.norm_q(q)
            k = k if attn.norm_k is None else attn.norm_k(k)
        if self.mode == "explicit":  # AttnProcessor: probs · V
            probs = attention_probs(attn, q.flatten(0, 1), k.flatten(0, 1), mask)  # (B*h, N, K)
            self.sink(self.name, probs, heads)
            out = torch.bmm(probs, v.flatten(0, 1))  # (B*h, N, d)
            return attn.batch_to_head_dim(out)  # (B, N, inner)
        self.record(attn, q, k, mask, heads)
        m = None if mask is None else mask.view(batch, heads, -1, mask.shape[-1])  # (B, h, 1 or N, K)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=m, dropout_p=0.0, is_causal=False)  # (B, h, N, d)
        return out.transpose(1, 2).reshape(batch, -1, heads * d).to(q.dtype)  # (B, N, inner)

    def record(self, attn, q, k, mask, heads: int) -> None:
        """Hand the sink ``softmax(QKᵀ/√d)`` of ``(B, h, N, d)`` queries and ``(B, h, K, d)`` keys: only of the
        rows it keeps where it says which (an :class:`~crossattn.attention.store.AttentionStore` under
        guidance keeps one half), so classifier-free guidance does not double the recording's work. Those rows go in
        float32, in bounded chunks of query rows reduced over heads as they come (:mod:`~crossattn.attention.scores`),
        never the whole ``(R, h, N, K)`` at once unless the store keeps every head."""
        keep = getattr(self.sink, "keep", None)
        if keep is None:  # a plain sink: every row, whole
            self.sink(self.name, attention_probs(attn, q.flatten(0, 1), k.flatten(0, 1), mask), heads)
            return
        rows = keep(q.shape[0])
        q, k = q[rows], k[rows]  # (R, h, N, d), (R, h, K, d)
        shape = (q.shape[0], heads, q.shape[2], k.shape[2])  # (R, h, N, K)
        if mask is not None:  # (B*h, 1 or N, K) → the kept rows' (R, h, 1 or N, K), float32 as the scores
            mask = mask.view(-1, heads, *mask.shape[1:])[rows].float()

        def probs(hs: slice, qs: slice) -> torch.Tensor:  # float32 (R, h', n, K), in float32 whatever the model's dtype
            m = None if mask is None else mask[:, hs, qs if mask.shape[2] > 1 else slice(None)].flatten(0, 1)
            chunk = attention_probs(attn, q[:, hs, qs].float().flatten(0, 1), k[:, hs].float().flatten(0, 1), m)
            return chunk.view(shape[0], hs.stop - hs.start, -1, shape[3])  # (R*h', n, K) → (R, h', n, K)

        chunking = Chunking.plan(shape, q.shape[-1], q.dtype != torch.float32, copies=3)  # base, scores, softmax
        self.sink.add(self.name, reduce_heads(probs, shape, chunking, self.sink.per_head), heads=heads)


def _version(tensor: torch.Tensor) -> int | None:
    """The tensor's in-place-modification counter, or None where it has none (inference tensors)."""
    try:
        return tensor._version
    except RuntimeError:
        return None
