"""Tiny random-weight diffusers pipelines of the four model families (SD-1.5, SDXL, SD3, Flux), for fixtures.

Everything is built here from configs: CLIP text towers over the shipped CLIP BPE tokenizer (``load_tokenizer``), a T5
tokenizer trained offline on a few shape/colour/relation prompts, tiny T5 encoders, U-Nets, MMDiT transformers and
VAEs. Each builder seeds ``torch.manual_seed(0)`` (so it is reproducible), disables the progress bar and takes well
under a second; two sampling steps at 64×96 take a fraction of a second more.

Sizes every family takes: ``height=64, width=96`` (multiples of 8 for SDXL's check, of ``vae_scale_factor * 2 = 4`` for
Flux's packing and of ``vae_scale_factor * patch_size = 4`` for SD3). All VAEs have two levels: ``vae_scale_factor`` 2.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path

import torch

from .attention_helpers import sdxl_unet, tiny_sd_pipeline, tiny_vae
from .conftest import generator, tiny_config

__all__ = [
    "CLIP_LENGTH",
    "FAMILIES",
    "FAMILIES_2026",
    "PROMPTS",
    "T5_CORPUS",
    "T5_VOCAB_SIZE",
    "build_family",
    "clip_text_encoder",
    "load_family",
    "sample",
    "save_family",
    "t5_encoder",
    "t5_tokenizer",
    "tiny_flux_pipeline",
    "tiny_sd15_pipeline",
    "tiny_sd3_pipeline",
    "tiny_sdxl_pipeline",
    "tiny_vae",
]

#: Two prompts of different lengths; ``triangle`` is several T5 pieces, every other word one.
PROMPTS = ["a red circle", "a blue square left of a green triangle"]

#: The CLIP tokenizers' length (``load_tokenizer(max_length=16)``) = the CLIP towers' position count.
CLIP_LENGTH = 16

# ---------------------------------------------------------------------------------------------------------------------
# T5 tokenizer, trained offline

_COLOURS = ("red", "blue", "green", "yellow")
_SHAPES = ("circle", "square", "star")
_RELATIONS = ("left of", "right of", "above", "below")
#: Rarer words: the trained vocabulary keeps them in several pieces (``triangle`` → ``▁t ri ang le``).
_RARE_SHAPES = ("triangle", "rectangle", "hexagon", "pentagon")
_RARE_COLOURS = ("purple", "orange")


def _corpus() -> list[str]:
    """192 frequent prompts (every colour, shape and relation) and 8 with the rarer words."""
    import itertools

    frequent = [
        f"a {c1} {s1} {rel} the {c2} {s2}"
        for c1, s1, rel, c2, s2 in itertools.product(_COLOURS, _SHAPES, _RELATIONS, _COLOURS[:2], _SHAPES[:2])
    ]
    rare = [
        f"a {c1} {s1} {rel} a {c2} {s2}"
        for c1, s1, rel, c2, s2 in zip(
            itertools.cycle(_RARE_COLOURS + _COLOURS),
            _RARE_SHAPES * 2,
            itertools.cycle(_RELATIONS),
            itertools.cycle(_COLOURS[1:]),
            itertools.cycle(_SHAPES),
            strict=False,
        )
    ]
    return frequent + rare


#: The training prompts of the T5 tokenizer.
T5_CORPUS = _corpus()
#: Vocabulary size of the trained model (3 special tokens, 62 letters and digits, the rest merges).
T5_VOCAB_SIZE = 128


@functools.lru_cache(maxsize=1)
def _t5_vocab() -> tuple[tuple[str, float], ...]:
    """A Unigram vocabulary ``((piece, log-probability), ...)``, ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2.

    ``tokenizers``' Unigram trainer needs far more text than a test can hold (on a few hundred prompts it keeps only
    single letters), so the pieces come from its deterministic BPE trainer (``▁`` word-start marker, every ASCII letter
    and digit in the alphabet) and each piece's score is the log of its frequency in the BPE-encoded corpus (pieces
    the encoding never uses get a tenth of a count). Unigram's Viterbi then splits words exactly as the BPE does.
    """
    import math
    import string
    from collections import Counter

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    specials = ["<pad>", "</s>", "<unk>"]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(
        vocab_size=T5_VOCAB_SIZE,
        special_tokens=specials,
        initial_alphabet=list(string.ascii_letters + string.digits),
        show_progress=False,
    )
    bpe.train_from_iterator(T5_CORPUS, trainer)
    counts = Counter(piece for prompt in T5_CORPUS for piece in bpe.encode(prompt).tokens)
    pieces = [piece for piece in bpe.get_vocab() if piece not in specials]
    total = sum(counts.values()) + len(pieces)
    scores = {piece: math.log((counts[piece] or 0.1) / total) for piece in pieces}
    ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    return tuple((token, 0.0) for token in specials) + tuple(ranked)


def t5_tokenizer(folder: str | Path | None = None):
    """A T5 tokenizer (transformers' ``T5Tokenizer``: Unigram, ``▁`` pieces, ``</s>`` appended, pad id 0).

    Built offline from a vocabulary trained on :data:`T5_CORPUS` (128 tokens, no ``<extra_id_*>`` sentinels). With
    ``folder`` it is saved there and the tokenizer loaded back from it is returned (the pipeline folder round trip).
    """
    from transformers import T5Tokenizer

    tokenizer = T5Tokenizer(vocab=list(_t5_vocab()), extra_ids=0, model_max_length=512)
    if folder is None:
        return tokenizer
    tokenizer.save_pretrained(folder)
    return T5Tokenizer.from_pretrained(folder)


# ---------------------------------------------------------------------------------------------------------------------
# Components


def clip_text_encoder(hidden_size: int, projection_dim: int | None = None, layers: int = 2):
    """A tiny CLIP text tower over the shipped CLIP vocabulary (``text_encoder_config`` of the package).

    ``CLIPTextModel`` without ``projection_dim``; ``CLIPTextModelWithProjection`` (pooled output projected to
    ``projection_dim``) with it. Two layers: SDXL and SD3 read the penultimate hidden state.
    """
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from crossattn.models.model import text_encoder_config

    config = text_encoder_config(tiny_config(text_hidden_size=hidden_size, text_layers=layers, text_heads=2))
    if projection_dim is None:
        return CLIPTextModel(config)
    config.projection_dim = projection_dim
    return CLIPTextModelWithProjection(config)


def t5_encoder(d_model: int = 32, vocab_size: int = T5_VOCAB_SIZE):
    """A tiny ``T5EncoderModel`` (T5 v1.1 style: gated-GELU feed-forward), ids of :func:`t5_tokenizer`."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=8,
        d_ff=2 * d_model,
        num_layers=2,
        num_heads=d_model // 8,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        feed_forward_proj="gated-gelu",
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return T5EncoderModel(config)


#: SD3's and Flux's VAEs: no quant convs, latents shifted and scaled (the values of diffusers' own SD3/Flux tests).
FLOW_VAE = dict(use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)


def _ready(pipe):
    """Progress bar off; every module in eval mode, as ``from_pretrained`` leaves them (T5 has dropout 0.1)."""
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---------------------------------------------------------------------------------------------------------------------
# Pipelines


def tiny_sd15_pipeline():
    """``attention_helpers.tiny_sd_pipeline`` (``StableDiffusionPipeline``, CLIP width 16) with its modules in eval
    mode. Default size 16×16 (``unet.sample_size`` 8 × ``vae_scale_factor`` 2); sizes must be multiples of 8."""
    return _ready(tiny_sd_pipeline())


def tiny_sdxl_pipeline():
    """``StableDiffusionXLPipeline``: CLIP towers of width 8 and 8 (the second with a 16-wide projection), concatenated
    into the 16-wide cross-attention of ``sdxl_unet`` (whose added conditioning is 6 time ids × 8 + the 16-wide pooled
    text). Default size 16×16 (``unet.sample_size`` 8 × ``vae_scale_factor`` 2); sizes must be multiples of 8."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    from crossattn.models.tokenizer import load_tokenizer

    torch.manual_seed(0)
    text_encoder = clip_text_encoder(8)
    text_encoder_2 = clip_text_encoder(8, projection_dim=16)
    vae = tiny_vae()
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    return _ready(
        StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=load_tokenizer(max_length=CLIP_LENGTH),
            tokenizer_2=load_tokenizer(max_length=CLIP_LENGTH),
            unet=sdxl_unet(),
            scheduler=scheduler,
            image_encoder=None,
            feature_extractor=None,
            add_watermarker=False,
        )
    )


def tiny_sd3_pipeline(with_t5: bool = True):
    """``StableDiffusion3Pipeline``: MMDiT (2 joint blocks, 2 heads of 8, patch 2, text width 32), CLIP towers of width
    16 + 16 (padded to T5's 32) with 16-wide projections (pooled 32), T5 of width 32 or none (``with_t5=False``: the
    pipeline then uses zeros for the T5 states). Default size 64×64 (``transformer.sample_size`` 32 ×
    ``vae_scale_factor`` 2); sizes must be multiples of ``vae_scale_factor * patch_size`` = 4."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    from crossattn.models.tokenizer import load_tokenizer

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=2,
        in_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=32,
        caption_projection_dim=16,
        pooled_projection_dim=32,
        out_channels=4,
    )
    text_encoder = clip_text_encoder(16, projection_dim=16)
    text_encoder_2 = clip_text_encoder(16, projection_dim=16)
    vae = tiny_vae(**FLOW_VAE)
    text_encoder_3 = t5_encoder(32) if with_t5 else None  # last: with and without T5, the other weights agree
    return _ready(
        StableDiffusion3Pipeline(
            transformer=transformer,
            scheduler=FlowMatchEulerDiscreteScheduler(),
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=load_tokenizer(max_length=CLIP_LENGTH),
            text_encoder_2=text_encoder_2,
            tokenizer_2=load_tokenizer(max_length=CLIP_LENGTH),
            text_encoder_3=text_encoder_3,
            tokenizer_3=t5_tokenizer() if with_t5 else None,
            image_encoder=None,
            feature_extractor=None,
        )
    )


def tiny_flux_pipeline():
    """``FluxPipeline``: one double- and one single-stream block (2 heads of 16, rope axes 4+4+8), 4 latent channels
    packed 2×2 (``in_channels`` 16), a CLIP tower of width 16 (pooled), T5 of width 32. Default size 256×256
    (``default_sample_size`` 128 × ``vae_scale_factor`` 2); sizes are rounded down to multiples of 4."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    from crossattn.models.tokenizer import load_tokenizer

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=16,
        axes_dims_rope=(4, 4, 8),
    )
    text_encoder = clip_text_encoder(16)
    text_encoder_2 = t5_encoder(32)
    vae = tiny_vae(**FLOW_VAE)
    return _ready(
        FluxPipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(),
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=load_tokenizer(max_length=CLIP_LENGTH),
            text_encoder_2=text_encoder_2,
            tokenizer_2=t5_tokenizer(),
            transformer=transformer,
            image_encoder=None,
            feature_extractor=None,
        )
    )


#: Family name → builder.
FAMILIES = {
    "sd15": tiny_sd15_pipeline,
    "sdxl": tiny_sdxl_pipeline,
    "sd3": tiny_sd3_pipeline,
    "sd3-no-t5": functools.partial(tiny_sd3_pipeline, with_t5=False),
    "flux": tiny_flux_pipeline,
}


#: The families added in 2026 (built by ``tests.family_pipelines_2026``; ``build_family`` and ``save_family`` take them).
FAMILIES_2026 = ("qwenimage", "flux2", "flux2-dev", "sd35", "pixart-sigma", "sana")


def _families_2026() -> dict:
    """Qwen-Image, Flux.2 (Klein), SD3.5, PixArt-Σ, Sana (``tests.family_pipelines_2026``, which imports this one)."""
    from . import family_pipelines_2026 as new
    from .family_pipelines_mistral import tiny_flux2_dev_pipeline

    return {
        "qwenimage": new.tiny_qwenimage_pipeline,
        "flux2": new.tiny_flux2_pipeline,
        "flux2-dev": tiny_flux2_dev_pipeline,
        "sd35": new.tiny_sd35_pipeline,
        "pixart-sigma": new.tiny_pixart_sigma_pipeline,
        "sana": new.tiny_sana_pipeline,
    }


def build_family(name: str):
    """The tiny pipeline of family ``name`` (one of :data:`FAMILIES`, or of the 2026 families)."""
    if name not in FAMILIES and name in _families_2026():
        return _families_2026()[name]()
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; choose from {sorted(FAMILIES)}")
    return FAMILIES[name]()


def save_family(name: str, folder: str | Path) -> Path:
    """Build family ``name`` and save it as a diffusers folder (safetensors) at ``folder``; returns the folder."""
    folder = Path(folder)
    build_family(name).save_pretrained(folder, safe_serialization=True)
    return folder


def load_family(folder: str | Path, **kwargs):
    """A saved family folder through ``DiffusionPipeline.from_pretrained`` (local files, safetensors, float32).

    Components saved as ``null`` that the pipeline class does not list as optional are passed as ``None``: diffusers
    0.42 refuses to load an SD3 folder saved without T5 otherwise ("expected [...] but only {...} were passed"), since
    ``text_encoder_3``/``tokenizer_3`` are not in ``StableDiffusion3Pipeline._optional_components``. ``dtype`` (not the
    deprecated ``torch_dtype``) keeps diffusers' ``FutureWarning`` away. Keyword arguments go to ``from_pretrained``.
    """
    import json

    import diffusers
    from diffusers import DiffusionPipeline

    index = json.loads((Path(folder) / "model_index.json").read_text(encoding="utf-8"))
    optional = getattr(getattr(diffusers, index["_class_name"], None), "_optional_components", [])
    for name, value in index.items():
        if isinstance(value, list) and value[:1] == [None] and name not in optional:
            kwargs.setdefault(name, None)
    if index["_class_name"].startswith("StableDiffusionXL"):
        kwargs.setdefault("add_watermarker", False)  # as built; else on whenever invisible-watermark is installed
    kwargs.setdefault("dtype", torch.float32)
    return _ready(DiffusionPipeline.from_pretrained(folder, use_safetensors=True, **kwargs))


#: pipelines whose prompt follows a system message of more than CLIP_LENGTH tokens → their text length in ``sample``
TEXT_LENGTHS = {"Flux2Pipeline": 128}


def sample(pipe, prompts=PROMPTS, *, steps: int = 2, height: int = 64, width: int = 96, seed: int = 0, **kwargs):
    """``pipe(prompts, ...)`` with a seeded generator (``max_sequence_length=16`` where it is taken): PIL images."""
    if "max_sequence_length" in inspect.signature(pipe.__call__).parameters:
        kwargs.setdefault("max_sequence_length", TEXT_LENGTHS.get(type(pipe).__name__, CLIP_LENGTH))
    out = pipe(
        prompt=prompts, num_inference_steps=steps, height=height, width=width, generator=generator(seed), **kwargs
    )
    return out.images
