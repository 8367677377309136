"""Fine-tuning the latent families (Stable Diffusion 1.x/2.x and SDXL folders) in the one training loop.

Not a second loop: :class:`LatentTrainer` is :class:`crossattn.training.train.Trainer` with the parts that
differ in latent space swapped, as diffusers' ``train_text_to_image_lora(_sdxl).py`` do them:

```
image (3, H, W) ──frozen VAE, once per run──▶ latents (C, H/f, W/f) × vae.config.scaling_factor  (cached)
captions ──every CLIP tokenizer──▶ ids ──PromptEncoder──▶ states (B, T, D) [+ SDXL: pooled (B, P), time ids (B, 6)]
loss: the same diffusion_loss (noise, t, target drawn in latents) with added_cond_kwargs on SDXL
```

The latents are the mean of the VAE's posterior (deterministic, so a resumed run sees the same numbers),
encoded once when the loader is built instead of once per step: the VAE encoder costs more than the
tiny U-Net step and never changes. The new words' token-embedding rows (textual inversion beside the
LoRA: pivotal tuning) train on every CLIP encoder the model has (SDXL: both).

SD3 and Flux.1 folders run the same loop with the flow-matching objective of their diffusers scripts
(:mod:`crossattn.training.flow_matching`): the same cached latents (shifted by the VAE's ``shift_factor``), LoRA on
the transformer's attention, the family's own prompt conditioning; text towers stay frozen there.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..models.lora_files import text_towers
from .flow_matching import FAMILY_SETTINGS, FLOW_PIPELINES, TowerCollate, flow_matching_loss, flow_towers
from .train import Trainer
from .train_setup import train_token_rows

#: The pipeline classes (``model_index.json``'s ``_class_name``) fine-tuned in latent space (the last two with the
#: flow-matching objective).
LATENT_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionXLPipeline", *FLOW_PIPELINES)


def latent_family(folder: str | Path | None) -> str | None:
    """The latent pipeline class a model folder holds (one of :data:`LATENT_PIPELINES`), or None
    (a crossattn pixel-space pipeline, or no folder)."""
    if folder is None:
        return None
    index = Path(folder) / "model_index.json"
    name = json.loads(index.read_text(encoding="utf-8")).get("_class_name") if index.is_file() else None
    return name if name in LATENT_PIPELINES else None


#: Flux's pipeline has no sample size in its transformer's config: ``FluxPipeline.default_sample_size``.
FLUX_SAMPLE_SIZE = 128


def latent_resolution(folder: str | Path) -> int:
    """The image side a latent folder trains at, the side its pipeline draws by default: the denoiser's
    ``sample_size`` (Flux: 128) × 2^(VAE levels − 1) (512 for SD-1.5, 1024 for SDXL, SD3 and Flux)."""
    root = Path(folder)
    denoiser = root / "unet" if (root / "unet").is_dir() else root / "transformer"
    config = json.loads((denoiser / "config.json").read_text(encoding="utf-8"))
    vae = json.loads((root / "vae" / "config.json").read_text(encoding="utf-8"))
    return int(config.get("sample_size", FLUX_SAMPLE_SIZE)) * 2 ** (len(vae["block_out_channels"]) - 1)


class PromptEncoder(torch.nn.Module):
    """Captions → the U-Net's conditioning, as the family's pipeline encodes a prompt.

    SD-1.5: the last hidden state of its CLIP tower. SDXL (Podell et al., 2023): the penultimate hidden
    states of both towers concatenated, plus ``added_cond_kwargs`` = the second tower's pooled, projected
    output and the six size/crop conditioning numbers (original size, crop top-left, target size).
    """

    def __init__(self, encoders: list, empty_ids: list[torch.Tensor], size: tuple[int, int] | None):
        super().__init__()
        self.encoders = torch.nn.ModuleList(encoders)
        self.empty_ids = empty_ids  # one (1, T) per tower: the ids of "" (caption dropout)
        self.size = size  # SDXL: (H, W) of the training images; None: SD-1.5

    def encode_batch(self, batch: dict, drop: torch.Tensor) -> tuple[torch.Tensor, dict]:
        keys = ("input_ids", "input_ids_2")[: len(self.encoders)]
        ids = [torch.where(drop[:, None], e, batch[k]) for k, e in zip(keys, self.empty_ids, strict=True)]  # (B, T)
        if self.size is None:
            return self.encoders[0](ids[0])[0], {}  # (B, T, D)
        states, pooled = [], None
        for encoder, tower_ids in zip(self.encoders, ids, strict=True):
            out = encoder(tower_ids, output_hidden_states=True)
            states.append(out.hidden_states[-2])  # (B, T, D_i)
            pooled = out[0]  # the last tower's projected pooled output (B, P)
        h, w = self.size
        time_ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=pooled.dtype, device=pooled.device)
        time_ids = time_ids.expand(pooled.shape[0], 6)  # (B, 6)
        return torch.cat(states, dim=-1), {"added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids}}


class LatentDataset(torch.utils.data.Dataset):
    """Items ``{"latents": (C, h, w), "text": str}`` of a dataset whose images were encoded once, with the source
    item's ``loss_weight`` where it had one (prior images, :class:`crossattn.training.prior.PriorImages`).
    ``dataset`` (the source) stays reachable, so the run's vocabulary lists its captions."""

    def __init__(self, latents: torch.Tensor, texts: list[str], dataset, weights: list[float | None] | None = None):
        self.latents, self.texts, self.dataset = latents, texts, dataset  # (N, C, h, w)
        self.weights = weights or [None] * len(texts)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> dict:
        item = {"latents": self.latents[index], "text": self.texts[index]}
        weight = self.weights[index]
        return item if weight is None else {**item, "loss_weight": weight}


@torch.no_grad()
def encode_latents(vae, dataset, device, batch_size: int = 8) -> LatentDataset:
    """Every image of ``dataset`` (the user's and the prior images alike) through the frozen VAE once: the
    posterior mean, shifted and scaled as the family's pipelines undo it (``(z − shift_factor) × scaling_factor``)."""
    items = [dataset[i] for i in range(len(dataset))]
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    chunks = []
    for start in range(0, len(items), batch_size):
        pixels = torch.stack([torch.as_tensor(it["pixel_values"]) for it in items[start : start + batch_size]])
        mean = vae.encode(pixels.to(device, vae.dtype)).latent_dist.mean  # (b, C, H/f, W/f)
        chunks.append(((mean - shift) * vae.config.scaling_factor).float().cpu())
    weights = [it.get("loss_weight") for it in items]
    return LatentDataset(torch.cat(chunks), [it["text"] for it in items], dataset, weights)  # (N, C, h, w)


class LatentTrainer(Trainer):
    """The training loop on a Stable Diffusion / SDXL / SD3 / Flux folder (``config.init_from``): frozen VAE and
    text towers, the adapters ``customize`` adds, the new words' rows on every CLIP tower (SD / SDXL); see the
    module doc. ``unet`` / ``unet_prepared`` name the loop's denoiser, a U-Net or (SD3, Flux) a transformer."""

    flow = False  # SD3 / Flux: the flow-matching objective (crossattn.training.flow_matching)

    def build_models(self) -> None:
        from ..models.loading import check_model_folder, load_resolved
        from ..models.model import make_scheduler

        cfg, acc = self.config, self.accelerator
        with torch.random.fork_rng():  # loading draws nothing we keep; the adapters' init below is seeded
            self.pipe = pipe = load_resolved(check_model_folder(cfg.init_from), dtype="float32")
        pipe.set_progress_bar_config(disable=True)
        self.flow = type(pipe).__name__ in FLOW_PIPELINES
        if self.flow:
            self.build_flow_models()
            return
        self.tokenizer, self.sample_scheduler = pipe.tokenizer, pipe.scheduler
        self.noise_scheduler = make_scheduler("ddpm", dict(pipe.scheduler.config))
        pipe.vae.requires_grad_(False).eval().to(acc.device)
        towers = text_towers(pipe)
        for _, encoder in towers:
            encoder.train(cfg.train_text_encoder).requires_grad_(cfg.train_text_encoder)
        pipe.unet.train()
        if self.customize is not None:
            with torch.random.fork_rng():
                torch.manual_seed(cfg.seed)
                self.customize(pipe)
        ids = cfg.trainable_token_ids
        self.token_rows_all = [train_token_rows(e, ids) for _, e in towers] if ids else []
        self.token_rows = self.token_rows_all[0] if ids else None
        self.unet, self.text_encoder = pipe.unet, pipe.text_encoder
        self.towers = [(tok, enc.to(acc.device)) for tok, enc in towers]
        self.max_length = min(pipe.tokenizer.model_max_length, pipe.text_encoder.config.max_position_embeddings)
        text_trains = cfg.train_text_encoder or bool(ids)
        self.trained = [pipe.unet] + ([e for _, e in self.towers] if text_trains else [])
        self.empty_ids = torch.tensor(self.tokenizer("", padding="max_length", max_length=self.max_length).input_ids)

    def build_flow_models(self) -> None:
        """SD3 / Flux: the transformer trains through the adapters ``customize`` adds; VAE and text towers frozen;
        the training noise is a copy of the folder's flow-matching scheduler. Under ``--mixed-precision fp16/bf16``
        the frozen weights are held in that type (a 12 B Flux transformer and T5-XXL do not fit a GPU in float32),
        the VAE stays float32 (the SD3 script's choice) and the adapters train in float32, as the scripts
        ``cast_training_params``."""
        from diffusers.training_utils import cast_training_params

        from .flow_matching import hold_frozen, noise_schedule

        cfg, pipe, acc = self.config, self.pipe, self.accelerator
        self.tokenizer, self.sample_scheduler = pipe.tokenizer, pipe.scheduler
        self.noise_scheduler, self.flow_settings = noise_schedule(pipe), FAMILY_SETTINGS[type(pipe).__name__]
        hold_frozen(pipe, acc.device, acc.mixed_precision)
        pipe.transformer.train()
        if self.customize is not None:
            with torch.random.fork_rng():
                torch.manual_seed(cfg.seed)
                self.customize(pipe)
        cast_training_params(pipe.transformer, dtype=torch.float32)
        self.token_rows_all, self.token_rows = [], None
        self.unet, self.text_encoder = pipe.transformer, pipe.text_encoder
        self.trained = [pipe.transformer]

    def bind_prepared(self, prepared: list) -> None:
        self.unet_prepared = prepared[0]
        if self.flow:
            from .flow_matching import prompt_encoder

            self.text_prepared = prompt_encoder(self.pipe, self.accelerator.device)
            return
        encoders = prepared[1:] or [e for _, e in self.towers]
        device = self.accelerator.device
        empties = [
            torch.tensor(tok("", padding="max_length", max_length=self.max_length).input_ids, device=device)[None]
            for tok, _ in self.towers
        ]  # (1, T) each
        side = self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor
        sdxl = len(self.towers) > 1
        self.text_prepared = PromptEncoder(encoders, empties, (side, side) if sdxl else None)

    def param_groups(self, params: list) -> list[dict]:
        """As the base loop's, with every tower's new-word rows in the ``embedding_lr`` group."""
        cfg, rows = self.config, self.token_rows_all
        if cfg.embedding_lr is None or not rows:
            return [{"params": params, "lr": cfg.learning_rate}]
        rest = [p for p in params if not any(p is r for r in rows)]
        return [
            {"params": rest, "lr": cfg.learning_rate},
            {"params": rows, "lr": cfg.embedding_lr, "weight_decay": 0.0},
        ]

    def build_loader(self, dataset):
        encoded = encode_latents(self.pipe.vae, dataset, self.accelerator.device)
        return super().build_loader(encoded)

    def compute_loss(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        """SD / SDXL: the base loop's diffusion loss; SD3 / Flux: the flow-matching loss."""
        if not self.flow:
            return super().compute_loss(batch, generator)
        models = (self.unet_prepared, self.text_prepared, self.noise_scheduler)
        return flow_matching_loss(*models, batch, generator, self.config, self.flow_settings)

    def check_item(self, item: dict) -> None:
        channels = self.pipe.vae.config.latent_channels if self.flow else self.unet.config.in_channels
        if item["latents"].shape[0] != channels:
            raise ValueError(f"latents have {item['latents'].shape[0]} channels; this denoiser takes {channels}")

    def collate(self):
        from .batching import CaptionCollate

        if self.flow:
            return TowerCollate(flow_towers(self.pipe))
        second = self.towers[1][0] if len(self.towers) > 1 else None
        return CaptionCollate(self.tokenizer, self.max_length, tokenizer_2=second)

    def pipeline(self):
        """The loaded family pipeline around the models being trained (the same module objects)."""
        return self.pipe

    def describe(self) -> dict:
        return {**super().describe(), "family": type(self.pipe).__name__, "model": None}
