"""Typed configurations: the model's shape and the sampling settings.

Each is a plain dataclass with a JSON round trip, so a config can be saved beside every
artefact it produced (``crossattn_config.json`` in a model folder, a sidecar beside an image).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T", bound="JsonConfig")

SCHEDULER_NAMES = ("ddpm", "ddim", "dpm++", "euler")


def check_scheduler(name: str | None) -> None:
    """``name`` is None (the model folder's own scheduler) or one of :data:`SCHEDULER_NAMES`."""
    from .errors import BadArgument

    if name is not None and name not in SCHEDULER_NAMES:
        raise BadArgument(f"unknown scheduler {name!r}; choices: {', '.join(SCHEDULER_NAMES)}")


def whole(value: Any, name: str, low: int, optional: bool = False, high: float = math.inf) -> int | None:
    """``value`` as an ``int`` in [``low``, ``high``]; a ``BadArgument`` naming it otherwise (None passes
    when ``optional``)."""
    from .errors import BadArgument

    if value is None and optional:
        return None
    ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if not ok or not float(value).is_integer() or not low <= value <= high:
        accepted = (
            f">= {low}" if high == math.inf else f"from {low} to {high:g}" if high < 1e15 else f"from {low} to {high}"
        )
        raise BadArgument(f"{name} {value!r} is not accepted; give a whole number {accepted}")
    return int(value)


def finite(value: Any, name: str, low: float = -math.inf, high: float = math.inf) -> float:
    """``value`` as a finite ``float`` in [``low``, ``high``]; a ``BadArgument`` naming it otherwise."""
    from .errors import BadArgument

    ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if not ok or not low <= value <= high:
        bounds = [f">= {low:g}"] * (low > -math.inf) + [f"<= {high:g}"] * (high < math.inf)
        accepted = " ".join(["a finite number", " and ".join(bounds)]).strip()
        raise BadArgument(f"{name} {value!r} is not accepted; give {accepted}")
    return float(value)


def check_strength(value: Any) -> float:
    """How far a given image is noised before it is denoised (img2img, maps of an image): a number in (0, 1];
    a ``BadArgument`` naming it otherwise. The one check of every front's strength (pipeline, request, page)."""
    from .errors import BadArgument

    ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if not ok or not 0 < value <= 1:
        raise BadArgument(f"strength {value!r} is not accepted; give a number in (0, 1] (how far the image is noised)")
    return float(value)


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
        """Write the config as JSON, atomically (a crash mid-write leaves the old file or none)."""
        from .files import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

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
    # the mid block's cross-attention (at the lowest resolution); off = a plain resnet mid block, so no
    # coarse word map is averaged into the maps (the speedrun's 4×4 level keeps its maps out)
    mid_block_cross_attention: bool = True
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


#: The largest seed: image i of a prompt starts from seed + i, and torch's generators take 64-bit seeds.
MAX_SEED = 2**63 - 1
#: The most sampling steps: the schedules are trained on 1,000 timesteps, so more steps repeat timesteps.
MAX_STEPS = 1000
#: The largest guidance scales: far past what any model draws with (SD 7.5, ours 4), a slip of the keyboard
MAX_GUIDANCE = 100.0
MAX_RELATION_GUIDANCE = 1e6


@dataclass
class SamplingConfig(JsonConfig):
    """The sampler settings of one job, and their defaults, written once: every front (CLI, web page,
    evaluation, training sample grids, prior images) takes its defaults from here, and constructing one
    checks every value (a ``BadArgument`` names the bad value and what is accepted)."""

    steps: int = 20
    guidance_scale: float = 4.0
    scheduler: str | None = None  # None: the model folder's own scheduler
    seed: int = 0
    relation_guidance: float = 50.0  # crossattn.models.relation_guidance step size; 0 = the model alone

    def __post_init__(self) -> None:
        check_scheduler(self.scheduler)
        self.seed = whole(self.seed, "seed", 0, high=MAX_SEED)
        self.steps = whole(self.steps, "steps", 1, high=MAX_STEPS)
        # below 0 is refused, not sampled unguided: pipelines guide only above 1, so -1 would silently mean 1
        self.guidance_scale = finite(self.guidance_scale, "guidance", 0.0, MAX_GUIDANCE)
        self.relation_guidance = finite(self.relation_guidance, "relation guidance", 0.0, MAX_RELATION_GUIDANCE)

    def pipeline_kwargs(self) -> dict[str, Any]:
        """The pipeline-call arguments these settings stand for (the seed makes the generators; the
        scheduler is set on the pipeline)."""
        return {
            "num_inference_steps": self.steps,
            "guidance_scale": self.guidance_scale,
            "relation_guidance": self.relation_guidance,
        }


#: ``crossattn train-clip``'s TrainingConfig (``shared/TRIALS.md`` run B): AdamW 5e-4, weight decay 0.1,
#: batch 128, fp32, no EMA or caption dropout; cosine decay after 50 warm-up steps.
CLIP_TRAINING_DEFAULTS = dict(
    steps=2500,
    batch_size=128,
    learning_rate=5e-4,
    weight_decay=0.1,
    warmup_steps=50,
    ema_decay=0.0,
    caption_dropout=0.0,
    mixed_precision="no",
    sample_every=250,
    checkpoint_every=100,
    data="clip-scenes",
)

MIXED_PRECISION = ("auto", "no", "fp16", "bf16")
#: keys of TrainingConfig files written before the sample grids' settings were a SamplingConfig → its fields
OLD_SAMPLE_KEYS = {"sample_steps": "steps", "sample_guidance": "guidance_scale"}
LR_SCHEDULES = ("cosine", "linear", "constant_with_warmup", "constant")


@dataclass
class TrainingConfig(JsonConfig):
    """How ``crossattn train`` (and fine-tuning, started from a pipeline folder) trains.

    Defaults follow ``shared/TRIALS.md``: AdamW at 5e-4 with 200 warm-up steps then cosine
    decay, batch 32, gradient clipping 1.0, EMA 0.999, 10 % caption dropout (so classifier-free
    guidance has an unconditional model), text encoder trained jointly.
    """

    steps: int = 1700  # optimizer steps
    batch_size: int = 32  # per process and per micro-step
    grad_accum: int = 1  # micro-steps per optimizer step
    learning_rate: float = 5e-4
    lr_schedule: str = "cosine"
    warmup_steps: int = 200
    weight_decay: float = 1e-2
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    max_grad_norm: float = 1.0  # 0 disables clipping
    mixed_precision: str = "auto"  # auto: bf16/fp16 on a GPU, fp32 on CPU (no speed-up there)
    ema_decay: float = 0.999  # 0 disables EMA
    caption_dropout: float = 0.1
    snr_gamma: float | None = None  # min-SNR weighting (Hang et al., 2023); None disables it
    grounding_weight: float = 0.0  # TokenCompose token + pixel loss on object words' attention; 0 = off
    ground_positions: bool = False  # the grounding loss also on position words ("top left": the object's mask)
    timestep_bias: float = 0.0  # density of training timesteps ∝ t^bias: 0 uniform, > 0 favours high noise
    # Peak LR of the text encoder's token embeddings when they train (None: learning_rate). Words the
    # model never saw keep small random rows that its first layer drowns (states < 2 % apart), so
    # they need to move far: textual inversion trains embeddings at ~10x a fine-tune's LR.
    embedding_lr: float | None = None
    # Rows of the token embedding that train while the rest of the text encoder is frozen (LoRA
    # fine-tuning's new words, textual-inversion style; Gal et al., ICLR 2023); () = none.
    trainable_token_ids: tuple[int, ...] = ()
    train_text_encoder: bool = True
    seed: int = 0
    data: str = "shapes"  # "shapes" (procedural scenes) or an image folder
    dataset_size: int = 0  # 0: as many scenes as the run consumes (no scene is seen twice)
    data_seed: int = 0
    num_workers: int = 0
    checkpoint_every: int = 250
    keep_checkpoints: int = 3
    sample_every: int = 250  # 0 disables sample grids
    sample_prompts: tuple[str, ...] = (
        "a red circle",
        "a blue square at the top left",
        "a green triangle at the bottom right",
        "a yellow circle left of a purple square",
        "an orange triangle above a blue circle",
        "a purple square and a green circle",
    )
    # the sampler settings of the sample grids (their seeds are train_outputs.SAMPLE_SEEDS); in config files
    # written before they were a SamplingConfig, the keys sample_steps and sample_guidance (read into it)
    sample_settings: SamplingConfig = field(default_factory=SamplingConfig)
    log_every: int = 10
    init_from: str | None = None  # a pipeline folder to start from (fine-tuning)
    # a CLIPTextModel or CLIP folder whose text tower replaces the starting text encoder (e.g. the mini-CLIP)
    text_encoder_from: str | None = None
    # shares of scene kinds (one, one_position, two_relation, two_and) in procedural data; None: the dataset's
    scene_mix: tuple[float, ...] | None = None
    # share of counting scenes ("two red circles [and a blue square]", issue 40) in procedural data; 0 = none
    counting: float = 0.0
    save_fp16: bool = False
    time_limit: float = 0.0  # minutes; 0 = none. Past it the run checkpoints, writes final and stops
    # minutes of the training clock (kept across --resume) at which the EMA weights are written to
    # RUN/snapshots/minute-MMM; the time spent writing them is off the clock
    snapshot_minutes: tuple[float, ...] = ()
    recipe: str | None = None  # the named recipe (crossattn.training.recipes) the run started from, if any

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingConfig:
        """Build from a dict (a saved ``config.json`` / ``training_config.json``), the sample grids' settings
        a nested :class:`SamplingConfig`; an older file's ``sample_steps`` / ``sample_guidance`` are read into it."""
        data = dict(data)
        old = {new: data.pop(key) for key, new in OLD_SAMPLE_KEYS.items() if key in data}
        if old or isinstance(data.get("sample_settings"), dict):
            data["sample_settings"] = SamplingConfig.from_dict({**old, **data.get("sample_settings", {})})
        return super().from_dict(data)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first impossible value and what is accepted."""
        for name in ("steps", "batch_size", "grad_accum", "checkpoint_every", "keep_checkpoints", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not isinstance(self.sample_settings, SamplingConfig):
            raise ValueError(f"sample_settings must be a SamplingConfig, got {self.sample_settings!r}")
        for name in ("warmup_steps", "dataset_size", "num_workers", "sample_every", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.time_limit < 0:
            raise ValueError(f"time_limit must be >= 0 minutes (0 = no limit), got {self.time_limit}")
        if any(m <= 0 for m in self.snapshot_minutes) or list(self.snapshot_minutes) != sorted(self.snapshot_minutes):
            raise ValueError(f"snapshot_minutes must be increasing minutes > 0, got {self.snapshot_minutes}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.caption_dropout < 1:
            raise ValueError(f"caption_dropout must be in [0, 1), got {self.caption_dropout}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1) (0 disables EMA), got {self.ema_decay}")
        if self.snr_gamma is not None and self.snr_gamma <= 0:
            raise ValueError(f"snr_gamma must be > 0 (or None to disable), got {self.snr_gamma}")
        if self.grounding_weight < 0:
            raise ValueError(f"grounding_weight must be >= 0 (0 = off), got {self.grounding_weight}")
        if self.embedding_lr is not None and not self.embedding_lr > 0:
            raise ValueError(f"embedding_lr must be > 0 (or None: the learning rate), got {self.embedding_lr}")
        if self.timestep_bias < 0:
            raise ValueError(f"timestep_bias must be >= 0 (0 = uniform timesteps), got {self.timestep_bias}")
        if self.max_grad_norm < 0:
            raise ValueError(f"max_grad_norm must be >= 0 (0 disables clipping), got {self.max_grad_norm}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision {self.mixed_precision!r}; accepted: {', '.join(MIXED_PRECISION)}")
        if self.scene_mix is not None and (
            len(self.scene_mix) != 4 or min(self.scene_mix) < 0 or abs(sum(self.scene_mix) - 1) > 1e-6
        ):
            raise ValueError(
                f"scene_mix must be 4 non-negative shares (one, one_position, two_relation, two_and) "
                f"summing to 1, got {self.scene_mix}"
            )
        if not 0 <= self.counting <= 1:
            raise ValueError(f"counting must be a share in [0, 1] of counting scenes (0 = none), got {self.counting}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule {self.lr_schedule!r}; accepted: {', '.join(LR_SCHEDULES)}")
