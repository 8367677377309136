"""Prior preservation for fine-tuning: images the base model draws of what it already knows.

DreamBooth (Ruiz et al., "DreamBooth: Fine Tuning Text-to-Image Diffusion Models for Subject-Driven
Generation", CVPR 2023) trains on the user's images together with images the *base* model generated
for class prompts, so that learning a new thing does not overwrite the old ones ("language drift").
Here the class prompts are captions of the scenes grammar the default model was trained on (random
layouts in the training mix of kinds, in the base model's own words), drawn once with the base model
before training and mixed into every batch as plain extra data, as many as the user's images: in
expectation half of each batch, DreamBooth's prior loss with weight 1.

On a Stable Diffusion / SDXL folder (or with ``class_prompt`` on any model), as in diffusers'
``train_dreambooth_lora(_sdxl).py``, every prior image is the base pipeline's own drawing of the user's
class prompt ("a photo of a dog"), one seed each, at the training resolution; the latent loop encodes
them through its frozen VAE with the user's images. ``loss_weight`` (diffusers' ``prior_loss_weight``)
scales their per-image loss (:class:`PriorImages`): with half of each batch prior images in expectation,
the batch mean is ½ (instance loss + weight × prior loss), diffusers' sum halved.

The images are written as an image folder (``OUT/prior``: PNGs, ``metadata.jsonl``, and
``prior_info.json`` saying how they were drawn), so a user can look at them and ``--resume`` trains
on the very same ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import SamplingConfig
from ..errors import BadArgument

PRIOR_DIR = "prior"
INFO_NAME = "prior_info.json"
MAX_PRIOR = 200  # diffusers' DreamBooth scripts default to 100 class images; our images are 32×32
PRIOR_STREAM = 0x9810  # the captions' random stream: no training or evaluation code uses it
IMAGE_SEED_BASE = 3_000_000  # far from the evaluation's seeds (1,000,000 + i); the examples sample other prompts
BATCH = 16


@dataclass(frozen=True)
class PriorSettings:
    """How the prior images are drawn; a folder drawn with other settings is not reused."""

    count: int
    base_model: str
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # its seed also picks the captions
    class_prompt: str | None = None  # every image's caption (DreamBooth's class prompt); None: the scenes grammar
    size: int | None = None  # the side drawn at (a latent family's training resolution); None: the model's own

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_PRIOR:
            raise BadArgument(f"prior image count {self.count} is not accepted; give 1–{MAX_PRIOR}")
        if not isinstance(self.sampling, SamplingConfig):
            raise BadArgument(f"prior sampling {self.sampling!r} is not accepted; give a SamplingConfig")
        if self.class_prompt is not None and not self.class_prompt.strip():
            raise BadArgument("the class prompt is empty; give the class words, e.g. 'a photo of a dog'")

    def info(self) -> dict:
        """What ``prior_info.json`` holds: the keys it has had since the prior was added (``count``,
        ``base_model``, ``seed``, ``steps``, ``guidance``), so a folder drawn before is still recognised,
        and ``class_prompt`` / ``size`` only where set."""
        config = self.sampling
        sampled = {"seed": config.seed, "steps": config.steps, "guidance": config.guidance_scale}
        extra = {k: v for k, v in (("class_prompt", self.class_prompt), ("size", self.size)) if v is not None}
        return {"count": self.count, "base_model": self.base_model, **sampled, **extra}

    def captions(self, vocabulary: set[str] | None) -> list[str] | None:
        """The captions drawn: the class prompt ``count`` times, else :func:`prior_captions` (None when the base
        model does not speak the scenes grammar)."""
        if self.class_prompt is not None:
            return [self.class_prompt] * self.count
        return prior_captions(self.count, self.sampling.seed, vocabulary) if vocabulary else None

    def call_arguments(self, pipe) -> dict:
        """The pipeline-call arguments of the drawing: the sampling settings the pipeline takes (relation
        guidance is crossattn's own) and, with ``size``, the height and width."""
        from ..models.loading import takes_argument

        kwargs = self.sampling.pipeline_kwargs()
        if not takes_argument(pipe, "relation_guidance"):
            kwargs.pop("relation_guidance")
        return kwargs | ({"height": self.size, "width": self.size} if self.size else {})


def prior_captions(count: int, seed: int, vocabulary: set[str]) -> list[str] | None:
    """``count`` seeded captions of the scenes grammar with the shapes ``vocabulary`` knows, or None
    when the base model was not trained on that grammar (a grammar word outside its vocabulary)."""
    from ..data.captions import ALL_SHAPES, format_caption
    from ..data.shapes import random_spec
    from ..models.vocabulary import grammar_words

    shapes = tuple(s for s in ALL_SHAPES if s in vocabulary)
    if not shapes or not grammar_words(shapes) <= vocabulary:
        return None
    rng = np.random.default_rng([seed, PRIOR_STREAM])
    specs = [random_spec(rng, shapes=shapes) for _ in range(count)]
    return [format_caption(s.objects, s.position, s.relation) for s in specs]


def reusable(folder: Path, settings: PriorSettings) -> bool:
    """Whether ``folder`` holds prior images drawn with exactly ``settings``."""
    info = folder / INFO_NAME
    if not info.is_file() or not (folder / "metadata.jsonl").is_file():
        return False
    try:
        return json.loads(info.read_text(encoding="utf-8")) == settings.info()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def draw_prior(
    settings: PriorSettings, captions: list[str], out: Path, progress: bool = True, replace: bool = False
) -> Path:
    """Sample ``captions`` with the base model (image ``i`` from seed ``IMAGE_SEED_BASE + 10,000 ·
    seed + i``) and write them as the image folder ``out`` (atomically, with ``prior_info.json``; an
    old ``out`` is swapped out only when ``replace`` and the drawing succeeded). Drawn on the GPU when there is one,
    as diffusers' DreamBooth scripts draw class images on the accelerator (an SD-1.5 prior is 512 px); the seeds'
    generators stay on the CPU, so only the device's arithmetic differs."""
    import torch
    from tqdm.auto import tqdm

    from ..data.folder import new_image_folder
    from ..models.loading import load_pipeline

    pipe = load_pipeline(settings.base_model, device=prior_device())
    pipe.set_progress_bar_config(disable=True)
    with new_image_folder(out, replace=replace) as writer:
        for start in tqdm(range(0, len(captions), BATCH), desc="prior images", unit="batch", disable=not progress):
            batch = captions[start : start + BATCH]
            seeds = [IMAGE_SEED_BASE + 10_000 * settings.sampling.seed + start + i for i in range(len(batch))]
            images = pipe(
                batch,
                **settings.call_arguments(pipe),
                generator=[torch.Generator(device="cpu").manual_seed(s) for s in seeds],
                output_type="np",
            ).images  # (B, H, W, 3) in [0, 1]
            for image, caption in zip(images, batch, strict=True):
                writer.add((np.asarray(image) * 255).round().astype(np.uint8), caption)
        (writer.folder / INFO_NAME).write_text(json.dumps(settings.info(), indent=2) + "\n", encoding="utf-8")
    return out


def prior_device() -> str | None:
    """Where prior images are drawn: ``"cuda"`` when torch sees a GPU, else None (the CPU, where pipelines load)."""
    import torch

    return "cuda" if torch.cuda.is_available() else None


def prior_folder(
    run: Path, settings: PriorSettings, vocabulary: set[str] | None, replace: bool, progress: bool = True
) -> Path | None:
    """``RUN/prior`` holding the prior images of ``settings``: reused when it already does (a resumed
    run), drawn otherwise; an old folder is replaced only when ``replace`` (``--overwrite``: start
    over, so always drawn afresh, even from a base model changed in place). None, with nothing drawn,
    when there is no class prompt and the base model does not speak the scenes grammar."""
    from ..files import ExistsError

    folder = run / PRIOR_DIR
    if not replace and reusable(folder, settings):
        return folder
    captions = settings.captions(vocabulary)
    if captions is None:
        return None
    if folder.exists() and not replace:
        raise ExistsError(
            f"{folder} holds prior images drawn otherwise than now ({settings}); pass --overwrite to redraw "
            "them, or the flags of the run that drew them"
        )
    return draw_prior(settings, captions, folder, progress, replace=replace)  # the old folder stays if it fails


class PriorImages:
    """The prior image folder as training items, each with its ``loss_weight`` (diffusers' ``prior_loss_weight``):
    :func:`crossattn.training.losses.diffusion_loss` multiplies the item's loss by it (the user's items: 1).
    ``dataset`` stays reachable (the run's vocabulary lists its captions)."""

    def __init__(self, dataset, loss_weight: float = 1.0):
        if not (loss_weight >= 0 and np.isfinite(loss_weight)):
            raise BadArgument(f"prior loss weight {loss_weight} is not accepted; give a finite number >= 0")
        self.dataset, self.loss_weight = dataset, float(loss_weight)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return {**self.dataset[index], "loss_weight": self.loss_weight}
