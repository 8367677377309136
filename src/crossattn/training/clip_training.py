"""Training the mini-CLIP in the one training loop: the contrastive objective with hard negatives.

:class:`ClipTrainer` is :class:`crossattn.training.train.Trainer` with another objective; the loop, its
checkpoints, ``--resume``, ``--time-limit``, logging and progress bar are the same code. Per step::

    images (B, 3, 32, 32) ── vision tower + projection ──▶ u (B, P), normalised
    captions (B, T) + their hard negatives (B, K, T) ── text tower + projection ──▶ v (B + B·K, P)
    logits = exp(τ) · u vᵀ  (B, B + B·K)
    loss = ½ [CE(logits, own caption) + CE(logits[:, :B]ᵀ, own image)]

The image→text term scores every image against all captions of the batch *and* all hard negatives
(NegCLIP, Yuksekgonul et al., ICLR 2023); a caption that occurs twice in a batch is not counted as
the other image's negative. Sample rounds log held-out hard-negative accuracy per kind instead of
sample grids; ``RUN/final`` is a transformers CLIP folder (:mod:`crossattn.models.clip_model`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from ..config import CLIP_TRAINING_DEFAULTS, TrainingConfig
from ..models.clip_model import ClipConfig, build_clip_model, save_clip_folder
from .batching import CaptionCollate
from .train import Trainer, TrainResult, train

PROBE_SCENES = 300  # held-out scenes per sample round (seed PROBE_SEED: never a training scene)
PROBE_SEED = 999_983


class ClipCollate(CaptionCollate):
    """:class:`CaptionCollate` plus ``negative_ids`` ``(B, K, T)`` from each item's ``negatives``."""

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = super().__call__(items)
        negatives = [[self.ids(text) for text in item["negatives"]] for item in items]
        batch["negative_ids"] = torch.tensor(negatives, dtype=torch.long)  # (B, K, T)
        return batch


def contrastive_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The symmetric CLIP loss with hard negatives in the image→text term (see the module docstring)."""
    ids, negatives = batch["input_ids"], batch["negative_ids"]  # (B, T), (B, K, T)
    b, k, t = negatives.shape
    texts = torch.cat([ids, negatives.reshape(b * k, t)])  # (B + B·K, T)
    # CLIPModel's forward (through accelerate's wrapper): normalised projections, exp(τ)-scaled logits
    logits = model(input_ids=texts, pixel_values=batch["pixel_values"]).logits_per_image  # (B, B + B·K)
    same = (ids[:, None, :] == texts[None, :, :]).all(-1)  # (B, B + B·K): the same caption
    same[torch.arange(b), torch.arange(b)] = False
    logits = logits.masked_fill(same, float("-inf"))
    labels = torch.arange(b, device=logits.device)
    image_to_text = torch.nn.functional.cross_entropy(logits, labels)
    text_to_image = torch.nn.functional.cross_entropy(logits[:, :b].T, labels)
    return (image_to_text + text_to_image) / 2


class ClipTrainer(Trainer):
    """The training loop with the mini-CLIP objective; ``model_config`` is a :class:`ClipConfig`."""

    def build_models(self) -> None:
        from transformers import CLIPModel

        from ..models.tokenizer import load_tokenizer

        cfg = self.config
        if cfg.init_from:
            self.model = CLIPModel.from_pretrained(cfg.init_from, use_safetensors=True)
        else:
            self.model = build_clip_model(self.model_config, seed=cfg.seed)
        self.model = self.model.float().train().to(self.accelerator.device)
        self.max_length = self.model.config.text_config.max_position_embeddings
        self.tokenizer = load_tokenizer(cfg.init_from, max_length=self.max_length)
        self.text_encoder = self.model
        self.trained = [self.model]

    def bind_prepared(self, prepared: list) -> None:
        self.model_prepared = prepared[0]

    def embedding_table(self) -> torch.nn.Parameter:
        return self.model.text_model.embeddings.token_embedding.weight

    def collate(self):
        return ClipCollate(self.tokenizer, self.max_length)

    def check_item(self, item: dict) -> None:
        size = self.model.config.vision_config.image_size
        shape = tuple(torch.as_tensor(item["pixel_values"]).shape)
        if shape != (3, size, size):
            raise ValueError(f"dataset images have shape {shape}; this CLIP reads {(3, size, size)}")
        if not item.get("negatives"):
            raise ValueError("mini-CLIP training needs hard negatives per item (crossattn.data.negatives.ClipScenes)")

    def compute_loss(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        return contrastive_loss(self.model_prepared, batch)

    def sample(self) -> None:
        """Log held-out hard-negative accuracy per kind (the EMA weights, when kept)."""
        acc = self.accelerator
        if acc.is_main_process:
            from ..data.negatives import ClipScenes
            from ..evaluation.clip_judge import ClipJudge, hard_negative_accuracy

            size, counting = self.model_config.image_size, self.config.counting  # counting runs probe count swaps too
            scenes = ClipScenes(PROBE_SCENES, size, seed=PROBE_SEED, counting=counting)
            with self.evaluating():
                judge = ClipJudge(self.model, self.tokenizer)
                probe = hard_negative_accuracy(judge, [scenes.scene(i) for i in range(len(scenes))])
            self.run_dir.append_log({"step": self.state.step, "clip_probe": probe})
        acc.wait_for_everyone()

    def write_final(self, folder: Path) -> None:
        model = copy.deepcopy(self.model).half() if self.config.save_fp16 else self.model
        save_clip_folder(model, self.tokenizer, folder, self.model_config)
        self.config.save(folder / "training_config.json")


def clip_training_defaults(**overrides) -> TrainingConfig:
    """``TrainingConfig`` for the mini-CLIP: :data:`crossattn.config.CLIP_TRAINING_DEFAULTS` plus ``overrides``."""
    return TrainingConfig(**{**CLIP_TRAINING_DEFAULTS, **overrides})


def train_clip(
    clip_config: ClipConfig,
    config: TrainingConfig,
    out: str | Path,
    resume: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train the mini-CLIP on procedural scenes with hard negatives; ``RUN/final`` is a CLIP folder."""
    from ..data.negatives import ClipScenes

    def scenes(needed: int) -> ClipScenes:
        return ClipScenes(
            config.dataset_size or needed,
            clip_config.image_size,
            seed=config.data_seed,
            negatives=clip_config.negatives,
            kind_mix=clip_config.kind_mix,
            counting=config.counting,
        )

    return train(clip_config, config, scenes, out, resume, overwrite, progress=progress, trainer_cls=ClipTrainer)
