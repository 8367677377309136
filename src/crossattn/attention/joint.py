"""Capture on joint-attention transformers (MM-DiT): SD3's blocks, Flux's double- and single-stream blocks.

In an MM-DiT (Esser et al., "Scaling Rectified Flow Transformers", ICML 2024; FLUX.1, Black Forest
Labs 2024) the text does not enter through a separate ``attn2``: image and text tokens are projected
apart and attend jointly over their concatenation. A word's cross-attention map is the image-query →
text-key block of that joint softmax, normalised over all keys (image and text) as the model sees it,
so a row of the block sums to the share of attention the image position gives the text. The
image-query → image-key block is the self-attention map.

Recording costs little: on CPU the layer's output comes from PyTorch's fused flash kernel, the one
``F.scaled_dot_product_attention`` runs, which also returns every query's log-sum-exp ``lse``; a
block is then ``exp(q_img·kᵀ·scale − lse)``, ``N × T`` per head. Elsewhere the output comes from
``F.scaled_dot_product_attention`` and ``lse`` is computed for the image queries only.

The processors below are diffusers' ``JointAttnProcessor2_0`` (SD3) and ``FluxAttnProcessor`` (Flux)
with that one call changed; the output is the reference processor's, bit for bit on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .processor import Sink
from .scores import add_joint_blocks, store_behind


@dataclass
class JointContext:
    """What the transformer's forward pre-hook tells every processor of one trace: the text length
    (Flux's single-stream blocks get text and image already concatenated)."""

    text_length: int = 0


def fused_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``F.scaled_dot_product_attention(q, k, v)`` for ``(B, H, S, d)`` tensors, with each query's
    log-sum-exp ``(B, H, S)`` where the kernel gives it (CPU flash kernel), else None."""
    if q.device.type == "cpu" and not q.requires_grad:
        try:  # the kernel F.scaled_dot_product_attention picks on CPU; it also returns logsumexp
            out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False)[:2]
            return out, lse
        except (RuntimeError, AttributeError):
            pass
    return F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False), None


def record_blocks(q, k, lse, image: slice, text: slice, names: dict[str, str], hand) -> None:
    """``hand(name, probs)`` the image→text (``names["cross"]``) and image→image (``names["self"]``) blocks
    of ``softmax(q·kᵀ·scale)`` over all keys, each ``(B, H, N, K)``; ``q``, ``k``: ``(B, H, S, d)``. Handed a store's
    ``add``, the blocks go in bounded float32 chunks, head-averaged as the store keeps them (:mod:`.scores`)."""
    store = store_behind(hand)
    if store is not None:
        return add_joint_blocks(q, k, lse, image, text, names, store)
    scale = q.shape[-1] ** -0.5
    q_img = q[:, :, image].float()  # (B, H, N, d): the image queries
    if lse is None:  # normaliser over every key, image and text
        lse = torch.logsumexp(q_img @ k.float().transpose(-1, -2) * scale, dim=-1)  # (B, H, N)
    else:
        lse = lse[:, :, image].float()  # (B, H, N)
    for kind, keys in (("cross", text), ("self", image)):
        if kind in names:
            scores = q_img @ k[:, :, keys].float().transpose(-1, -2) * scale  # (B, H, N, K)
            hand(names[kind], (scores - lse[..., None]).exp())  # (B, H, N, K): rows sum to this block's share


class JointCapture:
    """Base of the two joint capture processors: the layer names by kind, the sink, the context."""

    def __init__(self, names: dict[str, str], sink: Sink, context: JointContext):
        unknown = set(names) - {"cross", "self"}
        if unknown or not names:
            raise ValueError(f"kinds {sorted(names)!r}; accepted: cross, self (at least one)")
        self.names = names
        self.sink = sink
        self.context = context

    def attend(self, q, k, v, image: slice, text: slice) -> torch.Tensor:
        """Record the blocks (of the rows the sink keeps, where it says which: one guidance half) and
        return the attention output ``(B, H, S, d)``."""
        out, lse = fused_attention(q, k, v)
        keep = getattr(self.sink, "keep", None)
        if keep is None:
            record_blocks(q, k, lse, image, text, self.names, self.hand_all)
            return out
        rows = keep(q.shape[0])
        lse = None if lse is None else lse[rows]
        add_joint_blocks(q[rows], k[rows], lse, image, text, self.names, self.sink)  # (R, H, S, ·): bounded chunks
        return out

    def hand_all(self, name: str, probs: torch.Tensor) -> None:
        """Every row's ``(B, H, N, K)`` block to a plain sink, as ``(B*H, N, K)``."""
        self.sink(name, probs.flatten(0, 1), probs.shape[1])


class SD3CaptureProcessor(JointCapture):
    """``JointAttnProcessor2_0`` (SD3, SD3.5) with recording; the sequence is ``[image, text]``."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        batch, n_image = hidden_states.shape[:2]
        q, k, v = (attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states))  # (B, N, inner)
        d = k.shape[-1] // attn.heads
        q, k, v = (x.view(batch, -1, attn.heads, d).transpose(1, 2) for x in (q, k, v))  # (B, H, N, d)
        q = q if attn.norm_q is None else attn.norm_q(q)
        k = k if attn.norm_k is None else attn.norm_k(k)
        if encoder_hidden_states is not None:
            text = encoder_hidden_states
            tq, tk, tv = (attn.add_q_proj(text), attn.add_k_proj(text), attn.add_v_proj(text))  # (B, T, inner)
            tq, tk, tv = (x.view(batch, -1, attn.heads, d).transpose(1, 2) for x in (tq, tk, tv))  # (B, H, T, d)
            tq = tq if attn.norm_added_q is None else attn.norm_added_q(tq)
            tk = tk if attn.norm_added_k is None else attn.norm_added_k(tk)
            q, k, v = torch.cat([q, tq], dim=2), torch.cat([k, tk], dim=2), torch.cat([v, tv], dim=2)  # (B, H, S, d)
        out = self.attend(q, k, v, slice(0, n_image), slice(n_image, None))  # (B, H, S, d)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * d).to(q.dtype)  # (B, S, inner)
        image_out = attn.to_out[1](attn.to_out[0](out[:, :n_image]))  # (B, N, C)
        if encoder_hidden_states is None:
            return image_out
        text_out = out[:, n_image:]  # (B, T, inner)
        return image_out, text_out if attn.context_pre_only else attn.to_add_out(text_out)


class FluxCaptureProcessor(JointCapture):
    """``FluxAttnProcessor`` with recording; the sequence is ``[text, image]``. A double-stream block
    is given both; a single-stream block only their concatenation (the text length comes from the
    context)."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        from diffusers.models.embeddings import apply_rotary_emb
        from diffusers.models.transformers.transformer_flux import _get_qkv_projections

        if attention_mask is not None:
            raise ValueError("tracing a Flux attention layer with an attention mask is not supported")
        q, k, v, tq, tk, tv = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)  # (B, S, inner)
        q, k, v = (x.unflatten(-1, (-1, attn.head_dim)) for x in (q, k, v))  # (B, S, H, d)
        q, k = attn.norm_q(q), attn.norm_k(k)
        joint = encoder_hidden_states is not None and attn.added_kv_proj_dim is not None
        if joint:
            tq, tk, tv = (x.unflatten(-1, (-1, attn.head_dim)) for x in (tq, tk, tv))  # (B, T, H, d)
            tq, tk = attn.norm_added_q(tq), attn.norm_added_k(tk)
            q, k, v = torch.cat([tq, q], dim=1), torch.cat([tk, k], dim=1), torch.cat([tv, v], dim=1)  # (B, S, H, d)
        if image_rotary_emb is not None:
            q = apply_rotary_emb(q, image_rotary_emb, sequence_dim=1)
            k = apply_rotary_emb(k, image_rotary_emb, sequence_dim=1)
        text = encoder_hidden_states.shape[1] if joint else self.context.text_length
        q, k, v = (x.transpose(1, 2) for x in (q, k, v))  # (B, H, S, d), as diffusers' native backend
        out = self.attend(q, k, v, slice(text, None), slice(0, text)).transpose(1, 2)  # (B, S, H, d)
        out = out.flatten(2, 3).to(q.dtype)  # (B, S, inner)
        if not joint:
            return out
        text_out, image_out = out.split_with_sizes([text, out.shape[1] - text], dim=1)  # (B, T, ·), (B, N, ·)
        image_out = attn.to_out[1](attn.to_out[0](image_out.contiguous()))
        return image_out, attn.to_add_out(text_out.contiguous())


def joint_capture_class(processor) -> type[JointCapture] | None:
    """The capture processor that stands in for ``processor`` (diffusers' default joint processors), else None."""
    from diffusers.models.attention_processor import JointAttnProcessor2_0
    from diffusers.models.transformers.transformer_flux import FluxAttnProcessor

    if type(processor) is JointAttnProcessor2_0:
        return SD3CaptureProcessor
    if type(processor) is FluxAttnProcessor and processor._attention_backend is None:
        return FluxCaptureProcessor
    return None
