"""Per-image tuning before an edit of a given image (issue 41): a small LoRA fitted on the one image.

UniTune (Valevski et al., "UniTune: Text-Driven Image Editing by Fine Tuning a Diffusion Model on a Single
Image", 2022) and Imagic (Kawar et al., CVPR 2023) fine-tune the model on the image to be edited, with its
caption, so that what the model draws for that caption is this image and not its own idea of it; the edit
then starts from a model that "knows" the image's shapes. Here the fit is LoRA's (Hu et al., 2021): rank-r
adapters on the U-Net's attention projections, the targets ``crossattn finetune`` adapts
(:data:`crossattn.training.lora.UNET_TARGETS`, :func:`~crossattn.training.lora.lora_config`), trained for
``tune_steps`` (:class:`~crossattn.editing.settings.EditSettings`) steps of the diffusion loss at random
timesteps (:func:`crossattn.training.losses.diffusion_loss`) on the one image with its source caption.

:func:`tune` returns the fitted weights (:class:`TunedAdapter`), not a changed pipeline: the adapter is
added only inside :func:`adapter_added` (the fit; the inversion; the edit, each its own ``with``) and is
removed again when it ends, also on an exception, so the shared pipeline is exactly as before (its modules,
their ``requires_grad``, and any LoRA loaded with ``--lora``, which stays active beside it).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from ..errors import BadArgument

#: the adapter's name on the U-Net (beside a ``--lora`` adapter's own)
ADAPTER = "image_tuning"


@dataclass(frozen=True)
class TuningConfig:
    """How the per-image LoRA is fitted (its length is ``EditSettings.tune_steps``). ``rank`` 4: one 32×32
    image needs little capacity, and a small adapter moves the model less off the words it edits with;
    ``lr`` 1e-3 (AdamW), ``crossattn finetune``'s LoRA rate: with B starting at zero a few dozen steps at
    diffusers' usual 1e-4 hardly move the model; ``batch_size`` noise draws of the image a step (each at its
    own timestep); ``caption_dropout``, the share of them trained with the empty caption (0: UniTune's caption
    alone); ``seed`` draws the adapter's initial A, the noise and the timesteps, so a fit is the same for it."""

    rank: int = 4
    lr: float = 1e-3
    batch_size: int = 4
    caption_dropout: float = 0.0
    seed: int = 0

    def __post_init__(self):
        for name in ("rank", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} is {value!r}; accepted: a whole number >= 1")
        if isinstance(self.lr, bool) or not isinstance(self.lr, int | float) or not 0 < self.lr < 1:
            raise ValueError(f"lr is {self.lr!r}; accepted: a learning rate between 0 and 1")
        dropout = self.caption_dropout
        if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout <= 1:
            raise ValueError(f"caption_dropout is {dropout!r}; accepted: a share from 0 to 1")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed is {self.seed!r}; accepted: a whole number")


@dataclass
class TunedAdapter:
    """A per-image LoRA as :func:`tune` fitted it: its ``weights`` (peft's state dict of the adapter, CPU
    copies), the ``steps`` it took, its ``config`` and the loss of each step."""

    steps: int
    config: TuningConfig
    weights: dict[str, torch.Tensor]
    losses: list[float] = field(default_factory=list)


def check_tunable(pipe) -> None:
    """A :class:`~crossattn.errors.BadArgument` for a pipeline the fit cannot read: the loss encodes the
    caption with one CLIP text encoder and passes the U-Net nothing else (pixel-space models, SD-1.5)."""
    if getattr(pipe, "unet", None) is None or getattr(pipe, "text_encoder_2", None) is not None:
        raise BadArgument(
            f"tune_steps fits a LoRA on a U-Net read by one text encoder (the shipped models, SD-1.5); "
            f"{type(pipe).__name__} is not one (leave tune_steps 0)"
        )
    if pipe.unet.config.get("addition_embed_type") is not None:
        raise BadArgument(
            f"tune_steps: {type(pipe).__name__}'s U-Net needs added conditioning, which the fit does not pass "
            "(leave tune_steps 0)"
        )


def tune(pipe, latents: torch.Tensor, prompt: str, steps: int, config: TuningConfig | None = None) -> TunedAdapter:
    """Fit a rank-``config.rank`` LoRA on the U-Net's attention to the one image ``latents`` (``(1, C, h, w)``, the
    model's input: :func:`crossattn.sampling.given_image.image_latents`) with ``prompt``, ``steps`` AdamW steps of
    the diffusion loss, each on ``config.batch_size`` noise draws at random timesteps. The pipeline is left as
    it was; the fitted weights are returned, for :func:`adapter_added`."""
    from ..config import TrainingConfig
    from ..models.model import make_scheduler
    from ..training.losses import diffusion_loss

    config = config or TuningConfig()
    check_tunable(pipe)
    noise_scheduler = make_scheduler("ddpm", dict(pipe.scheduler.config))  # training's forward process
    loss_config = TrainingConfig(caption_dropout=config.caption_dropout, snr_gamma=None, grounding_weight=0.0)
    ids, empty = caption_ids(pipe, prompt), caption_ids(pipe, "")
    x0 = latents.detach().to(pipe.device, pipe.unet.dtype).expand(config.batch_size, -1, -1, -1)  # (B, C, h, w)
    key = "latents" if getattr(pipe, "vae", None) is not None else "pixel_values"
    batch = {key: x0, "input_ids": ids.expand(config.batch_size, -1)}  # (B, T)
    generator = torch.Generator().manual_seed(config.seed)
    losses = []
    with adapter_added(pipe, config) as params, frozen(pipe.text_encoder):
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
        for _ in range(steps):
            loss = diffusion_loss(pipe.unet, pipe.text_encoder, noise_scheduler, batch, generator, loss_config, empty)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        weights = adapter_weights(pipe.unet)
    return TunedAdapter(steps, config, weights, losses)


def caption_ids(pipe, text: str) -> torch.Tensor:
    """``(1, T)`` token ids of ``text``, padded as training pads them (to the text encoder's length)."""
    length = min(pipe.tokenizer.model_max_length, pipe.text_encoder.config.max_position_embeddings)
    ids = pipe.tokenizer(text, padding="max_length", max_length=length, truncation=True).input_ids
    return torch.tensor(ids, device=pipe.device)[None]


def adapter_weights(unet) -> dict[str, torch.Tensor]:
    """The :data:`ADAPTER`'s weights on ``unet``: peft's state dict of it, detached CPU copies."""
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(unet, adapter_name=ADAPTER)
    return {name: tensor.detach().to("cpu").clone() for name, tensor in state.items()}


@contextmanager
def adapter_added(pipe, config: TuningConfig, weights: dict[str, torch.Tensor] | None = None) -> Iterator[list]:
    """The :data:`ADAPTER` on ``pipe.unet`` while the ``with`` runs: new (A drawn from ``config.seed``, B zero;
    its parameters, the only trainable ones, are yielded) or with ``weights`` (:class:`TunedAdapter`'s). It is
    active beside any LoRA already loaded. On leaving, normally or on an exception, the adapter is deleted, the
    U-Net's peft wrappers unwrapped when it had no adapter before, and every parameter's ``requires_grad``
    restored: the U-Net is the module it was."""
    from ..training.lora import UNET_TARGETS, lora_config

    unet = pipe.unet
    before = list(getattr(unet, "peft_config", {}) or {})
    if ADAPTER in before:
        raise RuntimeError(f"the U-Net already has an adapter named {ADAPTER!r} (a per-image fit left in place?)")
    active = list(unet.active_adapters()) if before else []
    flag_set = "_hf_peft_config_loaded" in vars(unet)
    flag = vars(unet).get("_hf_peft_config_loaded")
    with frozen(unet):
        try:
            with torch.random.fork_rng(devices=[]), warnings.catch_warnings():  # A drawn seeded, the RNG restored
                torch.manual_seed(config.seed)
                warnings.filterwarnings("ignore", "Already found a `peft_config`")  # beside a --lora: meant
                unet.add_adapter(lora_config(config.rank, UNET_TARGETS), adapter_name=ADAPTER)
            if active:  # add_adapter made this one the only active adapter: the loaded LoRA on again beside it
                unet.set_adapters([*active, ADAPTER])
            if weights is not None:
                load_weights(unet, weights)
            params = [p for name, p in unet.named_parameters() if f".{ADAPTER}." in name]
            for p in params:
                p.requires_grad_(weights is None)
            yield params
        finally:
            remove_adapter(unet, before, active)
            if flag_set:
                unet._hf_peft_config_loaded = flag
            elif "_hf_peft_config_loaded" in vars(unet):
                del unet._hf_peft_config_loaded  # the class's default again


def load_weights(unet, weights: dict[str, torch.Tensor]) -> None:
    """``weights`` into the :data:`ADAPTER`; a ``RuntimeError`` when a key is missing or left over."""
    from peft.utils import set_peft_model_state_dict

    result = set_peft_model_state_dict(unet, weights, adapter_name=ADAPTER)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    missing = [k for k in getattr(result, "missing_keys", []) or [] if f".{ADAPTER}." in k]
    if unexpected or missing:
        raise RuntimeError(f"the tuned adapter does not fit this U-Net: {len(missing)} missing, {unexpected[:3]}")


def remove_adapter(unet, before: list[str], active: list[str]) -> None:
    """Take :data:`ADAPTER` off ``unet`` (whatever of it was added): unwrap every peft layer when ``before``
    (the adapters it had) is empty, else delete this one and make ``active`` the active adapters again."""
    if ADAPTER not in (getattr(unet, "peft_config", {}) or {}) and not before:
        if getattr(unet, "peft_config", None) is not None or has_peft_layers(unet):
            unet.unload_lora()  # a half-made add: unwrap what there is
        return
    if not before:
        unet.unload_lora()  # every peft wrapper off: the modules are the plain ones again
        return
    if ADAPTER in unet.peft_config:
        unet.delete_adapters(ADAPTER)
    unet.set_adapters(active)


def has_peft_layers(module) -> bool:
    """Whether any submodule of ``module`` is a peft tuner layer."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) for m in module.modules())


@contextmanager
def frozen(module) -> Iterator[None]:
    """``module``'s parameters frozen while the ``with`` runs (the fit trains the adapter alone); each one's
    ``requires_grad`` as it was afterwards."""
    flags = {name: p.requires_grad for name, p in module.named_parameters()}
    module.requires_grad_(False)
    try:
        yield
    finally:
        for name, p in module.named_parameters():
            if name in flags:
                p.requires_grad_(flags[name])
