"""What the sampling commands (``generate``, ``maps``, ``edit``, ``eval``) share on the command-line
side: turning their flags into a :class:`~crossattn.sampling.SamplingRequest` and a resolved
:class:`~crossattn.sampling.ModelRef`. The work itself is :mod:`crossattn.sampling`'s, which the web
explorer and notebooks call too. Kept here so those command modules import this one and never each other."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import BadArgument
from ..sampling import ModelRef, SamplingRequest, check_unet  # noqa: F401 (check_unet: kept importable here)


def set_threads(threads: int | None) -> None:
    """``--threads N``: torch's CPU threads (on a shared CPU, fewer threads than cores is often faster)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def check_device(name: str | None) -> None:
    """``--device NAME``: a torch device this machine has (None: the CPU); a :class:`BadArgument` naming
    it and the devices available otherwise, before any model loads."""
    if name is None:
        return
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is not None and device_available(device):
        return
    why = "is not a torch device" if device is None else "is not available on this machine"
    if device is not None and device.type == "cuda" and torch.version.cuda is None:
        why += f" (torch {torch.__version__} was built without CUDA)"
    raise BadArgument(f"--device {name} {why}; available: {', '.join(available_devices())}")


def device_available(device) -> bool:
    """Whether ``device`` (a ``torch.device``) exists here: the CPU always, a GPU if its backend sees it."""
    import torch

    if device.type == "cpu":
        return True
    backend = torch.backends.mps if device.type == "mps" else getattr(torch, device.type, None)
    if backend is None or not backend.is_available():
        return False
    count = backend.device_count() if hasattr(backend, "device_count") else 1
    return device.index is None or device.index < count


def available_devices() -> list[str]:
    """``cpu``, then each CUDA device (``cuda:0``, ...) and ``mps`` where present."""
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


def request_from_args(args: argparse.Namespace, prompts: list[str], **fields: Any) -> SamplingRequest:
    """The request a sampling command's flags stand for (every flag named like a request field); the
    device is checked first."""
    check_device(getattr(args, "device", None))
    return SamplingRequest.from_flags(vars(args), prompts=tuple(prompts), **fields)


def model_from_args(args: argparse.Namespace) -> ModelRef:
    """``--model`` and ``--lora``, checked and hashed once for the whole command."""
    return ModelRef.resolve(args.model, getattr(args, "lora", None))
