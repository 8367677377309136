"""Which model a sampling job uses, resolved once: folders checked, content hashed, vocabulary read.

``--model`` and ``--lora`` may name a pipeline / LoRA folder or a run folder (its ``final/``); the
default is the shipped model (or, until one ships, an untrained placeholder). :meth:`ModelRef.resolve`
does that look-up and hashes the folders once, before anything loads, and everything after (loading,
the unknown-word warning, every sidecar) reads the resolved paths instead of looking again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: its pipeline folder (None: the untrained placeholder), LoRA folder, hashes."""

    folder: Path | None
    hash: str
    lora: Path | None = None
    lora_hash: str | None = None

    @classmethod
    def resolve(cls, model: str | Path | None = None, lora: str | Path | None = None) -> ModelRef:
        """Check ``model`` (default: the shipped model) and ``lora`` and hash their contents; a missing
        or wrong folder is a ``FileNotFoundError`` / ``ValueError`` naming it."""
        from ..files import folder_hash
        from ..models.loading import (
            PLACEHOLDER,
            PRETRAINED_DIR,
            check_lora_folder,
            check_model_folder,
            has_default_model,
        )

        if model is None and not has_default_model():
            folder, digest = None, PLACEHOLDER
        else:
            folder = check_model_folder(model) if model is not None else PRETRAINED_DIR
        lora_folder = check_lora_folder(lora) if lora is not None else None  # checked before hashing
        if folder is not None:
            digest = folder_hash(folder)
        lora_hash = folder_hash(lora_folder) if lora_folder is not None else None
        return cls(folder, digest, lora_folder, lora_hash)

    def identity(self) -> dict[str, Any]:
        """``{"path", "hash"}`` (+ ``"lora": {"path", "hash"}``): the sidecar's ``model`` field."""
        from ..models.loading import PLACEHOLDER

        identity: dict[str, Any] = {"path": str(self.folder) if self.folder is not None else PLACEHOLDER}
        identity["hash"] = self.hash
        if self.lora is not None:
            identity["lora"] = {"path": str(self.lora), "hash": self.lora_hash}
        return identity

    def vocabulary(self) -> set[str] | None:
        """The words the model (and its LoRA) saw in training; None when the folder lists none."""
        from ..models.vocabulary import load_vocabulary

        words = load_vocabulary(self.folder)
        if words is not None and self.lora is not None:
            words |= load_vocabulary(self.lora) or set()
        return words

    def load(self, scheduler: str | None = None, device: str | None = None, dtype: str | None = None):
        """The pipeline, loaded from the resolved folders (see :func:`crossattn.load_pipeline`)."""
        from ..models.loading import load_resolved

        return load_resolved(self.folder, scheduler=scheduler, device=device, lora=self.lora, dtype=dtype)
