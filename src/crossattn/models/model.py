"""Build the denoiser (``UNet2DConditionModel``), the text encoder (``CLIPTextModel``) and the
noise schedulers from a :class:`~crossattn.config.ModelConfig`, or take either model from a
folder on disk.

The U-Net works in pixel space: its ``in_channels`` are the image's. Queries of every
``attn2`` come from the image features; keys and values from the text encoder's hidden states,
so ``cross_attention_dim`` must equal the text encoder's ``hidden_size``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from ..config import SCHEDULER_NAMES, ModelConfig
from .tokenizer import VOCAB_SIZE

#: The noise schedule all samplers share: v-prediction on a cosine schedule rescaled to zero
#: terminal SNR with trailing timesteps (Lin et al., "Common Diffusion Noise Schedules and
#: Sample Steps are Flawed", 2024). ``shared/TRIALS.md`` shows ε-prediction without it tints
#: backgrounds and lets DPM-Solver++ diverge.
SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "rescale_betas_zero_snr": True,
    "timestep_spacing": "trailing",
}

#: Per-scheduler settings on top of the shared schedule.
SCHEDULER_EXTRAS: dict[str, dict[str, Any]] = {
    "ddpm": {"clip_sample": False},
    "ddim": {"clip_sample": False, "set_alpha_to_one": False},
    "dpm++": {"algorithm_type": "dpmsolver++", "solver_order": 2, "final_sigmas_type": "zero"},
    "euler": {},
}


def scheduler_class(name: str):
    """The diffusers scheduler class behind one of :data:`SCHEDULER_NAMES`."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

    classes = {
        "ddpm": DDPMScheduler,
        "ddim": DDIMScheduler,
        "dpm++": DPMSolverMultistepScheduler,
        "euler": EulerDiscreteScheduler,
    }
    if name not in classes:
        raise ValueError(f"unknown scheduler {name!r}; choices: {', '.join(SCHEDULER_NAMES)}")
    return classes[name]


def make_scheduler(name: str, base_config: dict[str, Any] | None = None, prediction_type: str | None = None):
    """A scheduler by name, sharing the schedule of ``base_config`` (e.g. a model folder's).

    Without ``base_config`` the project's default schedule (:data:`SCHEDULE`) is used.
    """
    cls = scheduler_class(name)
    config = dict(SCHEDULE) if base_config is None else dict(base_config)
    config.update(SCHEDULER_EXTRAS[name])
    if prediction_type is not None:
        config["prediction_type"] = prediction_type
    return cls.from_config(config)


def fresh_scheduler(scheduler, name: str | None = None):
    """A new scheduler in its initial state with ``scheduler``'s schedule: the sampler ``name`` (one of
    :data:`SCHEDULER_NAMES`), or ``scheduler``'s own class when ``name`` is None."""
    if name is None:
        return type(scheduler).from_config(scheduler.config)
    return make_scheduler(name, dict(scheduler.config))


def set_scheduler(pipe, name: str) -> None:
    """Swap the sampler by name on any diffusers pipeline, keeping its noise schedule."""
    pipe.scheduler = fresh_scheduler(pipe.scheduler, name)


def build_unet(cfg: ModelConfig):
    """A pixel-space ``UNet2DConditionModel`` shaped by ``cfg``."""
    from diffusers import UNet2DConditionModel

    down = tuple("CrossAttnDownBlock2D" if x else "DownBlock2D" for x in cfg.cross_attention_levels)
    up = tuple("CrossAttnUpBlock2D" if x else "UpBlock2D" for x in reversed(cfg.cross_attention_levels))
    return UNet2DConditionModel(
        sample_size=cfg.resolution,
        in_channels=cfg.in_channels,
        out_channels=cfg.in_channels,
        down_block_types=down,
        up_block_types=up,
        mid_block_type="UNetMidBlock2DCrossAttn" if cfg.mid_block_cross_attention else "UNetMidBlock2D",
        block_out_channels=cfg.block_out_channels,
        layers_per_block=cfg.layers_per_block,
        norm_num_groups=cfg.norm_num_groups,
        cross_attention_dim=cfg.text_hidden_size,
        # diffusers' ``attention_head_dim`` is, for historical reasons, the number of heads.
        attention_head_dim=tuple(ch // cfg.attention_head_dim for ch in cfg.block_out_channels),
    )


def text_encoder_config(cfg: ModelConfig):
    """The ``CLIPTextConfig`` of the text encoder (shared by the pipeline and the mini-CLIP's text tower)."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=cfg.text_hidden_size,
        intermediate_size=4 * cfg.text_hidden_size,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        max_position_embeddings=cfg.text_max_length,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )


def build_text_encoder(cfg: ModelConfig):
    """A small ``CLIPTextModel`` over the real CLIP vocabulary."""
    from transformers import CLIPTextModel

    return CLIPTextModel(text_encoder_config(cfg))


def load_unet(path: str | Path):
    """A ``UNet2DConditionModel`` folder on disk (safetensors only)."""
    from diffusers import UNet2DConditionModel

    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no UNet2DConditionModel folder (config.json) at {folder}")
    return UNet2DConditionModel.from_pretrained(folder, use_safetensors=True)


def load_text_encoder(path: str | Path):
    """A ``CLIPTextModel`` folder on disk (safetensors only)."""
    from transformers import CLIPTextModel

    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no CLIPTextModel folder (config.json) at {folder}")
    return CLIPTextModel.from_pretrained(folder, use_safetensors=True)


def check_compatible(unet, text_encoder) -> None:
    """Keys/values of every ``attn2`` are projections of the text states: widths must agree."""
    cross_dim = unet.config.cross_attention_dim
    hidden = text_encoder.config.hidden_size
    if cross_dim != hidden:
        raise ValueError(
            f"the U-Net's cross_attention_dim is {cross_dim} but the text encoder's hidden_size is "
            f"{hidden}; they must be equal (keys and values of cross-attention are projections of the text states)"
        )


def build_components(
    cfg: ModelConfig,
    unet_path: str | Path | None = None,
    text_encoder_path: str | Path | None = None,
    tokenizer_path: str | Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The four pipeline components, each from ``cfg`` or from a folder on disk."""
    import torch

    from .tokenizer import load_tokenizer

    torch.manual_seed(seed)  # the random initialisation is reproducible
    unet = load_unet(unet_path) if unet_path else build_unet(cfg)
    text_encoder = load_text_encoder(text_encoder_path) if text_encoder_path else build_text_encoder(cfg)
    check_compatible(unet, text_encoder)
    max_len = text_encoder.config.max_position_embeddings
    tokenizer = load_tokenizer(tokenizer_path, max_length=max_len)
    scheduler = make_scheduler(cfg.default_scheduler, prediction_type=cfg.prediction_type)
    return {"unet": unet, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler}


@contextlib.contextmanager
def transformers_errors_only():
    """transformers logs only errors inside (e.g. no load report for a CLIP folder's skipped vision
    keys when its text tower is loaded); the previous verbosity comes back after."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)
