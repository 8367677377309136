"""One capture point for every transformer that routes its attention through diffusers' dispatch.

diffusers' attention processors of Flux, Flux.2, Qwen-Image (and most transformers since 0.35) compute Q, K and V
their own way (fused projections, RoPE, per-head norms, joint text+image sequences) and then make one call,
``dispatch_attention_fn(query, key, value, attn_mask=..., backend=...)`` with ``(B, S, H, d)`` tensors. That call is
the one place where every family's attention is the same thing, so it is where :class:`DispatchCapture` records: it
runs the model's **own processor** (its code, its state, its signature) with that one name bound to
:meth:`DispatchCapture.dispatch`, which returns what diffusers' dispatch returns and hands the image-query blocks
of the softmax to the store (:func:`crossattn.attention.joint.record_blocks`). Nothing global changes: the processor
code is re-bound per capture object (``types.FunctionType`` over a copy of its module's globals), so other
processors, other models and other threads keep diffusers' own function.

A family (:mod:`crossattn.attention.families`) says only where its text keys sit: ``[text, image]`` (Flux, Flux.2,
Qwen-Image) or ``[image, text]``; the image token count comes from the denoiser's input (:class:`JointContext`), so
single-stream blocks that get text and image already joined need no text length of their own. A key-padding mask
(Qwen-Image's text mask) is honoured exactly: each row's masked keys are left out of its softmax, as
``attn_mask`` leaves them out of the model's, and their probabilities are 0.
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import torch

from ..errors import HookError
from .joint import JointCapture, JointContext, fused_attention, record_blocks
from .processor import Sink

#: the name the processors' module binds diffusers' dispatch to
DISPATCH = "dispatch_attention_fn"


@dataclass
class TraceContext(JointContext):
    """:class:`JointContext` and what the families of :mod:`.families` add: the image token count (where a joint
    sequence's text ends) and, under true CFG (two transformer calls per step, prompt then negative: Flux's
    ``true_cfg_scale``, Qwen-Image, Flux.2), which of the two this call is."""

    image_tokens: int = 0
    sequential_cfg: bool = False  # the pipeline call runs its negative prompt as a second transformer call
    calls: int = 0  # transformer calls since the pipeline call began

    @property
    def half(self) -> str:
        """The guidance half of the current transformer call: ``cond`` unless a true-CFG negative call."""
        return "uncond" if self.sequential_cfg and self.calls % 2 == 0 else "cond"


def calls_dispatch(processor) -> bool:
    """Whether ``processor``'s ``__call__`` makes its attention call through diffusers' dispatch."""
    call = vars(type(processor)).get("__call__")
    return isinstance(call, types.FunctionType) and DISPATCH in call.__code__.co_names


def calls_sdpa(processor) -> bool:
    """Whether ``processor``'s ``__call__`` calls ``F.scaled_dot_product_attention`` itself (Sana's ``attn2``)."""
    call = vars(type(processor)).get("__call__")
    names = call.__code__.co_names if isinstance(call, types.FunctionType) else ()
    return "F" in names and "scaled_dot_product_attention" in names


def rebound(function: types.FunctionType, name: str, value) -> types.FunctionType:
    """``function`` with the global ``name`` bound to ``value`` (its own module's globals otherwise: a copy)."""
    namespace = {**function.__globals__, name: value}
    copy = types.FunctionType(
        function.__code__, namespace, function.__name__, function.__defaults__, function.__closure__
    )
    copy.__kwdefaults__ = function.__kwdefaults__
    copy.__qualname__ = function.__qualname__
    return copy


class DispatchCapture(JointCapture):
    """Stands in for ``reference`` (a processor that calls diffusers' dispatch) and records its attention.

    ``names``: the layer name of each kind recorded (``cross``: image → text block, ``self``: image → image);
    ``text_first``: the joint sequence is ``[text, image]`` (else ``[image, text]``); ``separate``: queries and keys
    are different sequences (an ``attn2``: every key is text, or an ``attn1``: every key is image). A processor that
    calls ``F.scaled_dot_product_attention`` itself (``(B, H, S, d)``; Sana's ``attn2``) is captured the same way,
    its ``F`` bound to torch's functional module but for that one function. ``inspect.signature`` of
    ``capture.__call__`` is the reference's, so diffusers' ``Attention.forward`` passes it the same arguments."""

    def __init__(self, names, sink: Sink, context: TraceContext, reference, text_first=True, separate=False):
        super().__init__(names, sink, context)
        self.reference, self.text_first, self.separate = reference, text_first, separate
        function = type(reference).__call__
        if calls_dispatch(reference):
            call = rebound(function, DISPATCH, self.dispatch)
        elif calls_sdpa(reference):
            functional = types.SimpleNamespace(**vars(torch.nn.functional))
            functional.scaled_dot_product_attention = self.sdpa
            call = rebound(function, "F", functional)
        else:
            raise HookError(f"{type(reference).__name__} calls neither {DISPATCH} nor F.scaled_dot_product_attention")
        self.__call__ = types.MethodType(call, reference)  # what Attention.forward inspects, and what runs

    def __call__(self, *args, **kwargs):  # the instance's own __call__ (set in __init__) is the reference's code
        return self.__dict__["__call__"](*args, **kwargs)

    def dispatch(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, *a, **kw):
        """diffusers' ``dispatch_attention_fn`` (``(B, S, H, d)`` in and out) with the blocks recorded."""
        from diffusers.models.attention_dispatch import dispatch_attention_fn

        if is_causal or (scale is not None and scale != query.shape[-1] ** -0.5):
            raise HookError("tracing causal attention, or attention scaled other than by 1/sqrt(d), is not supported")
        q, k, v = (x.transpose(1, 2) for x in (query, key, value))  # (B, H, S, d)
        plain = dropout_p == 0.0 and scale is None and not a and kw.get("backend") is None and _native_active()
        if plain and attn_mask is None:
            out, lse = fused_attention(q, k, v)  # the kernel the native backend runs, with each query's lse
            out = out.transpose(1, 2)  # (B, S, H, d)
        elif plain and q.device.type == "cpu" and not q.requires_grad and _key_padding(attn_mask):
            bias = torch.zeros(attn_mask.shape, dtype=q.dtype).masked_fill_(~attn_mask, float("-inf"))  # (B, 1, 1, S)
            out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, attn_mask=bias)
            out = out.transpose(1, 2)  # (B, S, H, d): the CPU kernel SDPA runs for a boolean mask, its lse masked
        else:
            out = dispatch_attention_fn(query, key, value, attn_mask, dropout_p, is_causal, scale, *a, **kw)
            lse = None
        self.record(q, k, lse, attn_mask)
        return out

    def sdpa(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
        """``F.scaled_dot_product_attention`` (``(B, H, S, d)`` in and out) with the blocks recorded."""
        if is_causal or (scale is not None and scale != query.shape[-1] ** -0.5):
            raise HookError("tracing causal attention, or attention scaled other than by 1/sqrt(d), is not supported")
        plain = dropout_p == 0.0 and scale is None and not kwargs and query.device.type == "cpu"
        if plain and not query.requires_grad and (attn_mask is None or attn_mask.dtype == query.dtype):
            flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu  # SDPA's CPU kernel, with each lse
            out, lse = flash(query, key, value, 0.0, False, attn_mask=attn_mask)
        else:
            out = torch.nn.functional.scaled_dot_product_attention(
                query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, **kwargs
            )
            lse = None
        self.record(query, key, lse, attn_mask)
        return out

    def slices(self, length: int) -> dict[str, slice]:
        """Positions of the ``cross`` (text) and ``self`` (image) keys in a ``length``-token sequence whose image
        tokens are the context's (all of them when the context has none); all keys for a ``separate`` layer."""
        if self.separate:
            return {"self": slice(None), "cross": slice(None)}
        n_image = self.context.image_tokens or length
        if self.text_first:
            return {"self": slice(length - n_image, None), "cross": slice(0, length - n_image)}
        return {"self": slice(0, n_image), "cross": slice(n_image, None)}

    def record(self, q, k, lse, mask) -> None:
        """Hand the sink the blocks of the rows it keeps; ``q``, ``k``: ``(B, H, S, d)``."""
        keep = getattr(self.sink, "keep", None)
        rows = slice(None) if keep is None else keep(q.shape[0])
        q, k = q[rows], k[rows]  # (R, H, S, d)
        lse = None if lse is None else lse[rows]
        if q.shape[0] == 0:  # the sink keeps none of this call (the other half of a true-CFG step)
            return
        hand = self.hand_all if keep is None else self.sink.add
        keys = None if mask is None else key_padding(mask, mask.shape[0], k.shape[2])[rows]  # (R, S) attended keys
        parts = self.slices(q.shape[2])
        if keys is None or bool(keys.all()):  # nothing masked (one prompt, or prompts of one length)
            record_blocks(q, k, lse, parts["self"], parts["cross"], self.names, hand)
            return
        if lse is not None:  # the kernel's lse is over the attended keys: only the masked keys' blocks need a 0
            masked = {self.names[kind]: ~keys[:, part] for kind, part in parts.items() if kind in self.names}
            zeroed = _Zeroed(hand, masked, getattr(self.sink, "per_head", True), store=keep is not None)
            record_blocks(q, k, lse, parts["self"], parts["cross"], self.names, zeroed.add)
            return
        for name, block in self.masked_blocks(q, k, keys).items():
            self.hand_all(name, block) if keep is None else self.sink.add(name, block, heads=q.shape[1])

    def masked_blocks(self, q, k, keys) -> dict[str, torch.Tensor]:
        """Each row's blocks over its own attended keys ``keys`` ``(R, S)`` (the softmax the masked attention
        takes), widened to every key with 0 at the masked ones: ``(R, H or 1, N, K)`` by layer name."""
        blocks: dict[str, list[torch.Tensor]] = {}
        for r in range(q.shape[0]):
            kept = keys[r].nonzero().squeeze(1)  # (S_r,)
            parts, got = self.slices(len(kept)), _Blocks(getattr(self.sink, "per_head", True))
            q_r = q[r : r + 1] if self.separate else q[r : r + 1, :, kept]  # (1, H, N or S_r, d)
            record_blocks(q_r, k[r : r + 1, :, kept], None, parts["self"], parts["cross"], self.names, got.add)
            for kind, name in self.names.items():  # (1, H or 1, N, K_r) → (1, H or 1, N, K): 0 at masked keys
                where = keys[r][self.slices(k.shape[2])[kind]]  # (K,) which keys of this kind are attended
                full = got.blocks[name].new_zeros(*got.blocks[name].shape[:-1], where.shape[0])
                full[..., where] = got.blocks[name]
                blocks.setdefault(name, []).append(full)
        return {name: torch.cat(parts) for name, parts in blocks.items()}  # (R, H or 1, N, K)


class _Zeroed:
    """A sink in front of ``hand`` that sets each block's masked keys to 0 (``masked``: ``(R, K)`` by layer name)."""

    def __init__(self, hand, masked: dict[str, torch.Tensor], per_head: bool, store: bool):
        self.hand, self.masked, self.per_head = hand, masked, per_head
        self.per_head_sink = store  # ``hand`` is a store's add (takes ``heads``), else a plain sink's

    def add(self, name: str, block: torch.Tensor, heads: int | None = None) -> None:
        block = block.masked_fill(self.masked[name][:, None, None, :], 0.0)  # (R, H or 1, N, K)
        self.hand(name, block) if heads is None or not self.per_head_sink else self.hand(name, block, heads=heads)


class _Blocks:
    """A sink that keeps the blocks :func:`record_blocks` hands it (bounded and head-reduced, as a store's)."""

    def __init__(self, per_head: bool):
        self.per_head = per_head
        self.blocks: dict[str, torch.Tensor] = {}

    def add(self, name: str, block: torch.Tensor, heads: int | None = None) -> None:
        self.blocks[name] = block


class TrueCfgSink:
    """The store, seen by the capture of a family whose true CFG runs the negative prompt as a second transformer
    call per step (prompt first, then negative: ``context.half``). The store would take both calls for images of
    the prompt; this keeps the half the store records (``guidance_half``) and drops the other, or with ``both``
    joins each step's two calls as the store's ``[uncond, cond]`` rows. Under batched CFG it is the store."""

    def __init__(self, store, context: TraceContext):
        self.store, self.context = store, context
        self.per_head = store.per_head
        self._cond: dict[str, tuple[torch.Tensor, int | None]] = {}  # this step's prompt block, by layer

    def keep(self, batch: int) -> slice:
        if not self.context.sequential_cfg:
            return self.store.keep(batch)
        wanted = self.store.guidance_half in ("both", self.context.half)
        return slice(0, batch if wanted else 0)

    def add(self, name: str, block: torch.Tensor, heads: int | None = None) -> None:
        if not self.context.sequential_cfg:
            return self.store.add(name, block, heads=heads)
        self.store.guided = True  # the store labels its rows as halves of a guided sampling
        if self.store.guidance_half != "both":
            return self.store.add(name, block, heads=heads)
        if self.context.half == "cond":
            self._cond[name] = (block.clone(), heads)  # the model may reuse the buffer before the negative call
            return None
        cond, _ = self._cond.pop(name)
        keys = max(block.shape[-1], cond.shape[-1])  # Qwen-Image trims each prompt's text to its own length
        pad = [torch.nn.functional.pad(x, (0, keys - x.shape[-1])) for x in (block, cond)]  # 0: no such key
        return self.store.add(name, torch.cat(pad), heads=heads)  # (2R, ·, N, K): [uncond, cond]


def key_padding(mask: torch.Tensor, batch: int, length: int) -> torch.Tensor:
    """``(B, S)`` bool: which keys each row attends, from a boolean or additive mask that is the same for every
    head and query (``(B, 1, 1, S)``, ``(B, S)``); any other mask is a :class:`HookError`."""
    if mask.dim() == 4 and mask.shape[2] == 1:  # (B, 1 or H, 1, S): diffusers repeats one mask over the heads
        mask = mask[:, 0, 0]  # (B, S)
    if mask.dim() != 2 or mask.shape[-1] != length:
        raise HookError(f"tracing attention with a mask of shape {tuple(mask.shape)}: only key-padding masks are")
    keys = mask if mask.dtype == torch.bool else mask > -1e4  # additive: diffusers writes -10000 or -inf
    return keys.expand(batch, length)


def _key_padding(mask) -> bool:
    """Whether ``mask`` is a boolean key-padding mask ``(B, 1, 1, S)`` (Qwen-Image's text mask)."""
    return mask.dtype == torch.bool and mask.dim() == 4 and mask.shape[1] == 1 and mask.shape[2] == 1


def _native_active() -> bool:
    """Whether diffusers' active attention backend (no per-processor one set) is PyTorch's SDPA."""
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    return _AttentionBackendRegistry._active_backend == AttentionBackendName.NATIVE
