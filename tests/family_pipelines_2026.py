"""Tiny random-weight pipelines of the families added in 2026: Qwen-Image, Flux.2 (Klein: the Qwen3 text tower),
SD3.5 (dual attention), PixArt-Σ and Sana, for fixtures; :mod:`tests.family_pipelines` lists them in ``FAMILIES``.

The LLM tokenizers are built offline: a byte-level BPE (Qwen2's pre-tokenizer, ``Ġ`` word starts) trained with
``tokenizers``' deterministic trainer on the test prompts and the pipelines' own chat templates, so each template word
is one token as in the real vocabulary (Qwen-Image drops the first 34 tokens of its template: they must be 34 here
too) while the rarer shape words stay in several pieces. Gemma's (Sana) is the same trainer over ``▁``-marked pieces.
"""

from __future__ import annotations

import functools

import torch

from .attention_helpers import tiny_vae
from .family_pipelines import T5_CORPUS, _ready, t5_encoder, t5_tokenizer, tiny_sd3_pipeline

#: Qwen-Image's system prompt (diffusers' ``QwenImagePipeline.prompt_template_encode``, before the user turn).
QWEN_IMAGE_SYSTEM = (
    "Describe the image by detailing the color, shape, size, texture, quantity, text, spatial relationships of the "
    "objects and background:"
)
#: Qwen3's chat template as Flux.2 Klein applies it (no thinking): the user turn, then an empty think block.
QWEN3_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n\n</think>\n\n{% endif %}"
)
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _llm_corpus() -> list[str]:
    """The test prompts, and the template words (repeated: they must merge into whole words)."""
    template = f"system\n{QWEN_IMAGE_SYSTEM}\nuser\nassistant\n<think>\n\n</think>\n\n"
    return [template] * 40 + T5_CORPUS


@functools.lru_cache(maxsize=1)
def _qwen2_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE vocabulary and merges (Qwen2's pre-tokenizer), 420 tokens."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = Qwen2Tokenizer().backend_tokenizer.pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=420,
        special_tokens=QWEN_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_llm_corpus(), trainer)
    model = json.loads(bpe.to_str())["model"]
    return model["vocab"], [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]


def qwen2_tokenizer():
    """A ``Qwen2Tokenizer`` (byte-level BPE, ``<|im_start|>`` / ``<|im_end|>`` specials, Qwen3's chat template)."""
    from transformers import Qwen2Tokenizer

    vocab, merges = _qwen2_vocab()
    tokenizer = Qwen2Tokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=1024)
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_SPECIALS[1:]})
    tokenizer.chat_template = QWEN3_CHAT_TEMPLATE
    return tokenizer


def qwen25_vl_encoder(vocab_size: int, hidden: int = 32):
    """A tiny ``Qwen2_5_VLForConditionalGeneration`` (2 text layers; a one-layer vision tower it never uses)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
        bos_token_id=None,
        eos_token_id=None,
    )
    vision = dict(
        depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=hidden, fullatt_block_indexes=[0]
    )
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **text)
    return Qwen2_5_VLForConditionalGeneration(config)


def tiny_qwenimage_pipeline():
    """``QwenImagePipeline``: 2 dual-stream blocks (2 heads of 16, rope axes 4+6+6), 4 latent channels packed 2×2,
    a Qwen2.5-VL of width 32 over :func:`qwen2_tokenizer`, its causal-3D VAE with one downsampling (factor 2).
    Sizes: multiples of ``vae_scale_factor * 2`` = 4."""
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )

    torch.manual_seed(0)
    tokenizer = qwen2_tokenizer()
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        axes_dims_rope=(4, 6, 6),
    )
    vae = AutoencoderKLQwenImage(
        base_dim=8, z_dim=4, dim_mult=[1, 2], num_res_blocks=1, temperal_downsample=[False],
        latents_mean=[0.0] * 4, latents_std=[1.0] * 4,
    )  # fmt: skip
    text_encoder = qwen25_vl_encoder(len(tokenizer))
    return _ready(
        QwenImagePipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(),
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            transformer=transformer,
        )
    )


def qwen3_encoder(vocab_size: int, hidden: int = 16, layers: int = 28):
    """A tiny ``Qwen3ForCausalLM``: Flux.2 Klein stacks its hidden states 9, 18 and 27 (so 28 layers of width 16)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
    )
    return Qwen3ForCausalLM(config)


def tiny_flux2_pipeline():
    """``Flux2KleinPipeline``: one double- and one single-stream block (2 heads of 16, rope axes 4×4), a Qwen3 of
    width 16 (three stacked layers: text width 48), the Flux.2 VAE with 4 latent channels patchified 2×2
    (``in_channels`` 16). Sizes: multiples of ``vae_scale_factor * 2`` = 4."""
    from diffusers import (
        AutoencoderKLFlux2,
        FlowMatchEulerDiscreteScheduler,
        Flux2KleinPipeline,
        Flux2Transformer2DModel,
    )

    torch.manual_seed(0)
    tokenizer = qwen2_tokenizer()
    transformer = Flux2Transformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=48,
        timestep_guidance_channels=16,
        axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=False,
    )
    vae = AutoencoderKLFlux2(
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
    )
    text_encoder = qwen3_encoder(len(tokenizer))
    return _ready(
        Flux2KleinPipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(),
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            transformer=transformer,
        )
    )


def tiny_sd35_pipeline():
    """SD3.5's ``StableDiffusion3Pipeline``: :func:`tests.family_pipelines.tiny_sd3_pipeline` with an MMDiT-X
    transformer (RMS q/k norm; block 0 has SD3.5's extra image-only ``attn2``)."""
    from diffusers import SD3Transformer2DModel

    pipe = tiny_sd3_pipeline()
    torch.manual_seed(1)
    config = {k: v for k, v in pipe.transformer.config.items() if not k.startswith("_")}  # no defaults put back
    config.update(dual_attention_layers=(0,), qk_norm="rms_norm")
    pipe.transformer = SD3Transformer2DModel.from_config(config)
    pipe.register_modules(transformer=pipe.transformer)
    return _ready(pipe)


def tiny_pixart_sigma_pipeline():
    """``PixArtSigmaPipeline``: a 2-layer PixArt transformer (2 heads of 8, patch 2, T5 width 32 captions),
    the offline T5 and a four-level VAE (factor 8, as the real one: the pipeline samples at the nearest of its
    256-pixel aspect-ratio bins, 64×96 → 208×304, and resizes the image). Sizes: multiples of 8 × patch 2 = 16."""
    from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    torch.manual_seed(0)
    down, up = ("DownEncoderBlock2D",) * 4, ("UpDecoderBlock2D",) * 4
    transformer = PixArtTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        norm_num_groups=4,
        cross_attention_dim=16,
        sample_size=32,
        patch_size=2,
        caption_channels=32,
        use_additional_conditions=False,
    )
    return _ready(
        PixArtSigmaPipeline(
            tokenizer=t5_tokenizer(),
            text_encoder=t5_encoder(32),
            vae=tiny_vae(
                block_out_channels=(8,) * 4, down_block_types=down, up_block_types=up
            ),  # factor 8, as PixArt's
            transformer=transformer,
            scheduler=DPMSolverMultistepScheduler(),
        )
    )


def _sana_instruction() -> str:
    """The complex human instruction ``SanaPipeline.__call__`` puts before every prompt by default."""
    import inspect

    from diffusers import SanaPipeline

    return "\n".join(inspect.signature(SanaPipeline.__call__).parameters["complex_human_instruction"].default)


@functools.lru_cache(maxsize=1)
def _gemma_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A ``▁``-marked BPE vocabulary (Gemma's normaliser: spaces → ``▁``), trained on the test prompts and Sana's
    instruction; the trainer splits at ``▁`` so no merge spans two words."""
    import json

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.normalizer = normalizers.Replace(" ", "▁")
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    trainer = trainers.BpeTrainer(vocab_size=450, special_tokens=specials, show_progress=False)
    bpe.train_from_iterator([_sana_instruction()] * 20 + [f" {p}" for p in T5_CORPUS], trainer)
    model = json.loads(bpe.to_str())["model"]
    return model["vocab"], [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]


def gemma_tokenizer():
    """A ``GemmaTokenizer`` (``▁`` pieces, ``<bos>`` first) over :func:`_gemma_vocab`."""
    from transformers import GemmaTokenizer

    vocab, merges = _gemma_vocab()
    return GemmaTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=1024, add_bos_token=True)


def tiny_sana_pipeline():
    """``SanaPipeline``: 2 layers (linear ``attn1``, 2 heads of 8; ``attn2`` over Gemma-2 captions of width 32),
    patch 1, a six-level DC-AE (factor 32, as the real one: the pipeline bins 64×96 to 448×704 and resizes back),
    Sana's flow DPM-Solver. Sizes: multiples of 32."""
    from diffusers import AutoencoderDC, DPMSolverMultistepScheduler, SanaPipeline, SanaTransformer2DModel
    from transformers import Gemma2Config, Gemma2Model

    torch.manual_seed(0)
    tokenizer = gemma_tokenizer()
    transformer = SanaTransformer2DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=2,
        num_cross_attention_heads=2,
        cross_attention_head_dim=8,
        cross_attention_dim=16,
        caption_channels=32,
        sample_size=16,  # the 512-pixel bins
        patch_size=1,
    )
    vae = AutoencoderDC(
        latent_channels=4,
        attention_head_dim=2,
        encoder_block_types="ResBlock",
        decoder_block_types="ResBlock",
        encoder_block_out_channels=(4, 4, 4, 4, 8, 8),
        decoder_block_out_channels=(4, 4, 4, 4, 8, 8),
        encoder_layers_per_block=(1,) * 6,
        decoder_layers_per_block=(1,) * 6,
        encoder_qkv_multiscales=((),) * 6,
        decoder_qkv_multiscales=((),) * 6,
        scaling_factor=0.41407,
    )
    config = Gemma2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, pad_token_id=0, bos_token_id=2, eos_token_id=1,
    )  # fmt: skip
    scheduler = DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return _ready(
        SanaPipeline(
            tokenizer=tokenizer, text_encoder=Gemma2Model(config), vae=vae, transformer=transformer, scheduler=scheduler
        )
    )
