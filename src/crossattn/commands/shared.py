"""What the sampling commands (``generate``, ``maps``, ``edit``, ``eval``) share on the command-line
side: turning their flags into a :class:`~crossattn.sampling.SamplingRequest` and a resolved
:class:`~crossattn.sampling.ModelRef`. The work itself is :mod:`crossattn.sampling`'s, which the web
explorer and notebooks call too. Kept here so those command modules import this one and never each other."""

from __future__ import annotations

import argparse
from typing import Any

from ..sampling import ModelRef, SamplingRequest, check_unet  # noqa: F401 (check_unet: kept importable here)


def set_threads(threads: int | None) -> None:
    """``--threads N``: torch's CPU threads (on a shared CPU, fewer threads than cores is often faster)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def request_from_args(args: argparse.Namespace, prompts: list[str], **fields: Any) -> SamplingRequest:
    """The request a sampling command's flags stand for (every flag named like a request field)."""
    return SamplingRequest.from_flags(vars(args), prompts=tuple(prompts), **fields)


def model_from_args(args: argparse.Namespace) -> ModelRef:
    """``--model`` and ``--lora``, checked and hashed once for the whole command."""
    return ModelRef.resolve(args.model, getattr(args, "lora", None))
