"""Typed configurations: the model's shape and the sampling settings.

Each is a plain dataclass with a JSON round trip, so a config can be saved beside every
artefact it produced (``crossattn_config.json`` in a model folder, a sidecar beside an image).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T", bound="JsonConfig")

SCHEDULER_NAMES = ("ddpm", "ddim", "dpm++", "euler")


class JsonConfig:
    """Mixin: ``to_dict`` / ``from_dict`` / ``save`` / ``load`` for a dataclass config."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        """Build from a dict; unknown keys are an error naming the accepted ones."""
        names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}; accepted: {sorted(names)}")
        # JSON has no tuples: turn lists back into tuples where the default is a tuple.
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls: type[T], path: str | Path) -> T:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


@dataclass
class ModelConfig(JsonConfig):
    """Shape of the pixel-space U-Net and the CLIP text encoder.

    Defaults follow ``shared/TRIALS.md``: 32×32 RGB, three resolution levels with
    cross-attention at 16×16 and 8×8 and in the mid block, head dim 32, a 3-layer CLIP text
    encoder of width 128 over the real 49,408-token BPE, v-prediction.
    """

    resolution: int = 32
    in_channels: int = 3
    block_out_channels: tuple[int, ...] = (64, 128, 128)
    cross_attention_levels: tuple[bool, ...] = (False, True, True)
    layers_per_block: int = 1
    attention_head_dim: int = 32  # channels per head (diffusers' own argument counts heads)
    norm_num_groups: int = 32
    text_hidden_size: int = 128
    text_layers: int = 3
    text_heads: int = 4
    text_max_length: int = 16
    prediction_type: str = "v_prediction"
    default_scheduler: str = "dpm++"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first inconsistent value."""
        if len(self.cross_attention_levels) != len(self.block_out_channels):
            raise ValueError(
                f"cross_attention_levels has {len(self.cross_attention_levels)} entries; "
                f"block_out_channels has {len(self.block_out_channels)}"
            )
        for ch in self.block_out_channels:
            if ch % self.norm_num_groups or ch % self.attention_head_dim:
                raise ValueError(
                    f"channel count {ch} must be divisible by norm_num_groups={self.norm_num_groups} "
                    f"and attention_head_dim={self.attention_head_dim}"
                )
        if self.resolution % self.downsample_factor:
            raise ValueError(f"resolution {self.resolution} is not divisible by {self.downsample_factor}")
        if self.text_hidden_size % self.text_heads:
            raise ValueError(f"text_hidden_size {self.text_hidden_size} not divisible by text_heads {self.text_heads}")
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"prediction_type {self.prediction_type!r}; accepted: epsilon, v_prediction, sample")
        if self.default_scheduler not in SCHEDULER_NAMES:
            raise ValueError(f"default_scheduler {self.default_scheduler!r}; accepted: {', '.join(SCHEDULER_NAMES)}")

    @property
    def downsample_factor(self) -> int:
        """Height and width must be multiples of this (one halving per level but the last)."""
        return 2 ** (len(self.block_out_channels) - 1)


@dataclass
class SamplingConfig(JsonConfig):
    """What the CLI and the evaluation use when the user does not say otherwise."""

    steps: int = 20
    guidance_scale: float = 4.0
    scheduler: str | None = None  # None: the model folder's own scheduler
    seed: int = 0
