"""crossattn: a small text-to-image diffusion system built to make cross-attention visible.

The public API is re-exported here lazily: ``import crossattn`` imports neither torch nor
diffusers; the first use of a name below does.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name → module that defines it
_EXPORTS = {
    "ModelConfig": "config",
    "SamplingConfig": "config",
    "CrossAttnPipeline": "models.pipeline",
    "load_pipeline": "models.loading",
    "build_components": "models.model",
    "make_scheduler": "models.model",
    "load_tokenizer": "models.tokenizer",
    "trace": "attention.trace",
    "AttentionMaps": "attention.maps",
    "maps_of_image": "sampling.given_image",
    "edit_image": "editing.image_edit",
    "invert_image": "editing.image_edit",
    "control": "editing.control",
    "edit": "editing.prompt_edit",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'crossattn' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # cache: later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
