"""Shared steps without computing the targets: drop their rows from the U-Net batch, fill them back.

During an edit's first ``shared_steps`` (:class:`crossattn.editing.control.Controller`) every
target row follows the source row: its latents are the source's, and its U-Net output is taken to
be the source's too (so the scheduler's history, for multistep solvers, is the source's trajectory,
and the target starts from the source's partly denoised state, as SDEdit does; Meng et al., ICLR
2022). Computing the target rows would be wasted work, so the controller drops them from the U-Net
call (a forward pre-hook slices every per-row tensor) and copies the source's output into their
places (a forward hook). An edit with ``.plain`` then runs 4 U-Net rows instead of 6 during those
steps under classifier-free guidance.

Inside a trace the rows are computed (the tracer records every row's maps) and only the output is
overwritten, so traced and untraced edits give the same images.
"""

from __future__ import annotations

import torch


def shared_layout(groups: list[int], images: int, targets: int, dropped: bool) -> tuple[list[int], list[int]]:
    """``(keep, index)`` for a U-Net batch of ``len(groups) × images`` rows.

    ``groups``: the first row of each guidance half (``[0]`` or ``[0, images]``), each laid out
    ``[source, *targets, *extra]``. ``keep``: the rows computed when the targets are dropped (every
    row but the targets). ``index``: for every row of the full batch, the row of the U-Net's output it
    takes (a target: its half's source row), counted among the kept rows when ``dropped``, else among all."""
    batch = len(groups) * images
    source_of = {first + 1 + j: first for first in groups for j in range(targets)}
    keep = [r for r in range(batch) if r not in source_of]
    position = {row: i for i, row in enumerate(keep)} if dropped else {row: row for row in range(batch)}
    index = [position[source_of.get(r, r)] for r in range(batch)]
    return keep, index


def take_rows(value, keep: torch.Tensor, batch: int):
    """``value`` with every tensor whose first dimension is ``batch`` cut to the ``keep`` rows
    (recursing into dicts, lists and tuples: SDXL's ``added_cond_kwargs``); other values unchanged."""
    if isinstance(value, torch.Tensor):
        return value.index_select(0, keep.to(value.device)) if value.ndim and value.shape[0] == batch else value
    if isinstance(value, dict):
        return {k: take_rows(v, keep, batch) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(take_rows(v, keep, batch) for v in value)
    return value


def fill_output(output, index: torch.Tensor):
    """The U-Net's output with its sample rows gathered by ``index`` ((B', C, H, W) → (B, C, H, W)).
    Handles both ``UNet2DConditionOutput`` and the ``return_dict=False`` tuple."""
    if isinstance(output, tuple):
        sample = output[0]
        return (sample.index_select(0, index.to(sample.device)), *output[1:])
    sample = output.sample
    return type(output)(sample=sample.index_select(0, index.to(sample.device)))
