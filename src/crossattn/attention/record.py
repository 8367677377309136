"""Record cross-attention probabilities *with their graph*, for losses on them.

Training's grounding loss (:mod:`crossattn.training.grounding_loss`) and sampling's relation guidance
(:mod:`crossattn.models.relation_guidance`) both need ``softmax(QKᵀ/√d)`` of every cross-attention
layer as a differentiable tensor, which the fused kernel does not expose. Inside
:func:`record_cross_attention` each ``attn2`` layer runs the explicit capture processor, whose
output equals the reference ``AttnProcessor``'s; the processors in place before (the defaults, or
a tracer's capture processors) are put back on exit, also after an exception, so a tracer active
around the block sees none of these extra passes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .install import ProcessorHook

#: One recorded call of a cross-attention layer: its ``(B*heads, N, T)`` probabilities and heads.
Record = tuple[torch.Tensor, int]


@contextlib.contextmanager
def record_cross_attention(unet, enabled: bool = True) -> Iterator[list[Record]]:
    """Inside, every cross-attention layer computes ``softmax(QKᵀ/√d)·V`` explicitly and appends its
    probabilities (with their graph, so a loss on them has gradients) to the yielded list.

    Layers a tracer is capturing (self-attention, say) get the reference processor the capture
    stands in for, so these extra passes are not recorded there either. The processors in place on
    entry are put back on exit, also after an exception. As for the tracer, a cross-attention layer
    must run a reference processor (or a tracer's capture of one): any other processor (an
    attention edit, an IP-Adapter) computes something the recording would silently drop, so it is
    a ``ValueError`` naming the layer, raised before anything is swapped.
    """
    if not enabled:
        yield []
        return
    with CrossAttentionRecorder(getattr(unet, "module", unet)) as recorder:  # DDP wraps the model
        yield recorder.records


class CrossAttentionRecorder(ProcessorHook):
    """The :class:`ProcessorHook` behind :func:`record_cross_attention`: the explicit capture processor on
    every ``attn2`` layer, appending to :attr:`records`. It nests inside a tracer (standing in for the
    tracer's capture processors, put back on exit), so it claims no processor type of its own."""

    processor_type = ()
    noun = "cross-attention recording"

    def __init__(self, model) -> None:
        super().__init__(model)
        self.records: list[Record] = []

    def prepare(self, current: dict) -> dict:
        from .layers import attention_layers, select_layers
        from .processor import CaptureProcessor, reference_processor, supported_reference

        def sink(_name: str, probs: torch.Tensor, heads: int) -> None:
            self.records.append((probs, heads))

        processors = {k: reference_processor(p) if isinstance(p, CaptureProcessor) else p for k, p in current.items()}
        for layer in select_layers(attention_layers(self.model), "cross"):
            if supported_reference(processors[layer.key]) is None:  # what the capture would silently replace
                raise ValueError(
                    f"cannot record {layer.name}: it runs {type(current[layer.key]).__name__}, and the recording "
                    "processor computes what AttnProcessor / AttnProcessor2_0 do, nothing else "
                    "(unet.set_default_attn_processor() puts those back)"
                )
            processors[layer.key] = CaptureProcessor(layer.name, sink, mode="explicit", cache_kv=False)
        return processors


def mean_over_heads(probs: torch.Tensor, heads: int) -> torch.Tensor:
    """``(B*heads, N, T)`` probabilities → ``(B, T, N)``: each token's map over the N pixels."""
    bh, n, t = probs.shape
    return probs.float().view(bh // heads, heads, n, t).mean(1).transpose(1, 2)  # (B, T, N)
