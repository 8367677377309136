"""LoRA adapters through peft (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", 2021).

A rank-r adapter on a linear layer ``W (out × in)`` adds ``B A`` with ``A (r × in)`` and
``B (out × r)``, so ``r · (in + out)`` trainable parameters, ``B`` starting at zero (the model
is unchanged before training). Adapters go on the U-Net's attention projections (``to_q``,
``to_k``, ``to_v``, ``to_out.0``: self- and cross-attention), with ``convs`` (``crossattn finetune``'s
default) on its resnets' 3×3 convolutions too (LoCon), and, when asked, on the text encoder's
(``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``). They are saved in diffusers' LoRA
layout (``pytorch_lora_weights.safetensors`` with ``unet.`` / ``text_encoder.`` keys), so
``pipe.load_lora_weights(folder)`` loads them, as for any Stable Diffusion LoRA.

Words the base model never saw (outside its ``vocabulary.json``) also get their token-embedding rows
trained (textual inversion, Gal et al., ICLR 2023, beside the LoRA: "pivotal tuning"); those rows
are saved as ``learned_embeds.safetensors`` next to the adapter and :func:`~crossattn.models.lora_files.load_lora` puts them back.
"""

from __future__ import annotations

from pathlib import Path

# the adapter's files and their loading live with the models; load_lora stays importable from here (public API)
from ..models.lora_files import (  # noqa: F401
    TOKENS_NAME,
    TOWER_KEYS,
    WEIGHT_NAME,
    load_lora,
    text_towers,
    tokens_file_name,
)

UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
UNET_CONV_TARGETS = ("conv1", "conv2")  # the resnets' 3x3 convolutions (peft Conv2d LoRA; diffusers loads it)
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


def lora_config(rank: int, targets: tuple[str, ...], alpha: float | None = None, ranks: dict | None = None):
    """A peft ``LoraConfig`` (alpha defaults to the rank: scale 1, as in diffusers' scripts). ``ranks``:
    other ranks for some targets (peft's ``rank_pattern``), each with alpha = its rank."""
    from peft import LoraConfig

    for r in (rank, *(ranks or {}).values()):
        if r < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {r}")
    return LoraConfig(
        r=rank,
        lora_alpha=alpha or rank,
        init_lora_weights="gaussian",
        target_modules=list(targets),
        rank_pattern=dict(ranks or {}),
        alpha_pattern={name: alpha or r for name, r in (ranks or {}).items()},
    )


def add_lora(
    pipe, rank: int, text_encoder: bool = False, alpha: float | None = None, convs: bool = False, conv_rank: int = 0
) -> None:
    """Freeze the pipeline's models and add trainable LoRA adapters (U-Net; text encoder if asked).
    ``convs`` also adapts the U-Net's 3×3 resnet convolutions (LoCon): a new *shape* is drawn by the
    convolutions more than by the attention projections; ``conv_rank`` (0: ``rank``) is their rank, as
    LyCORIS' ``conv_dim`` is kept apart from the linear layers' rank."""
    towers = [encoder for _, encoder in text_towers(pipe)]  # SDXL: both CLIP towers
    pipe.unet.requires_grad_(False)
    for encoder in towers:
        encoder.requires_grad_(False)
    conv_ranks = {t: conv_rank for t in UNET_CONV_TARGETS} if convs and conv_rank else None
    pipe.unet.add_adapter(lora_config(rank, UNET_TARGETS + (UNET_CONV_TARGETS if convs else ()), alpha, conv_ranks))
    for encoder in towers if text_encoder else ():
        add_text_encoder_adapter(encoder, lora_config(rank, TEXT_TARGETS, alpha))


def add_text_encoder_adapter(text_encoder, config) -> None:
    """peft's own injection: transformers 5's ``add_adapter`` demands a peft newer than PyPI has
    (0.22 against 0.21.2 today); the adapter layers and their state-dict keys are the same."""
    from peft import inject_adapter_in_model

    inject_adapter_in_model(config, text_encoder, adapter_name="default")
    text_encoder.peft_config = {"default": config}


def lora_parameter_count(model, rank: int, targets: tuple[str, ...]) -> int:
    """What rank-``rank`` adapters on ``targets`` should add: ``r · (in + out)`` per linear layer."""
    import torch

    total = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and any(name.endswith(t) for t in targets):
            total += rank * (module.in_features + module.out_features)
    return total


def save_lora(pipe, folder: str | Path) -> Path:
    """Write the adapters of ``pipe`` in diffusers' LoRA layout (safetensors, with their configs), through the
    pipeline family's own ``save_lora_weights`` (SDXL's also takes the second text encoder's)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from peft.utils import get_peft_model_state_dict

    def layers(model):
        adapted = model is not None and getattr(model, "peft_config", None)
        return (get_peft_model_state_dict(model), model.peft_config["default"].to_dict()) if adapted else (None, None)

    unet_layers, unet_meta = layers(pipe.unet)
    te_layers, te_meta = layers(pipe.text_encoder)
    kwargs = dict(
        unet_lora_layers=unet_layers,
        text_encoder_lora_layers=te_layers,
        unet_lora_adapter_metadata=unet_meta,
        text_encoder_lora_adapter_metadata=te_meta,
    )
    saver = StableDiffusionPipeline
    if isinstance(pipe, StableDiffusionXLPipeline):
        te2_layers, te2_meta = layers(pipe.text_encoder_2)
        kwargs.update(text_encoder_2_lora_layers=te2_layers, text_encoder_2_lora_adapter_metadata=te2_meta)
        saver = StableDiffusionXLPipeline
    saver.save_lora_weights(folder, safe_serialization=True, **kwargs)
    return Path(folder) / WEIGHT_NAME


def new_word_tokens(tokenizer, words) -> list[int]:
    """Token ids of ``words`` (the caption words the base model never saw), special tokens left out."""
    ids = {i for w in words for i in tokenizer(w, add_special_tokens=False).input_ids}
    return sorted(ids - set(tokenizer.all_special_ids))


def save_token_rows(pipe, folder: str | Path, token_ids, words: dict[str, list[int]] | None = None) -> Path | None:
    """The rows ``token_ids`` of every CLIP tower's embedding, as ``learned_embeds.safetensors`` (SDXL's second
    tower: ``learned_embeds_2.safetensors``) keyed by token string, the layout of diffusers' textual-inversion
    files, which :func:`~crossattn.models.lora_files.load_lora` writes back into the same tokens. diffusers'
    ``load_lora_weights`` accepts only LoRA keys, so the rows live beside the adapter.

    ``words`` (word → its token ids) also writes ``textual_inversion/<word>.safetensors`` with the word's rows
    per tower as ``clip_l`` (and SDXL's ``clip_g``), the layout of diffusers' advanced DreamBooth-LoRA script,
    which stock diffusers loads as a new token: ``pipe.load_textual_inversion(rows["clip_l"], token="<word>",
    text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)``.
    """
    from safetensors.torch import save_file

    if not token_ids:
        return None
    from .train_setup import embedding_weights

    tables = [embedding_weights(encoder).detach().to("cpu") for _, encoder in text_towers(pipe)]
    tokens = pipe.tokenizer.convert_ids_to_tokens(list(token_ids))
    for n, table in enumerate(tables):
        rows = {t: table[i].clone().contiguous() for t, i in zip(tokens, token_ids, strict=True)}
        save_file(rows, str(Path(folder) / tokens_file_name(n)))
    for word, ids in (words or {}).items():
        per_tower = {key: table[list(ids)].clone().contiguous() for key, table in zip(TOWER_KEYS, tables, strict=False)}
        (Path(folder) / "textual_inversion").mkdir(exist_ok=True)
        save_file(per_tower, str(Path(folder) / "textual_inversion" / f"{word}.safetensors"))  # (k, D) each
    return Path(folder) / TOKENS_NAME


def write_model_card(folder: str | Path, info: dict, samples: list[tuple[str, Path]] = ()) -> Path:
    """``README.md`` beside the adapter, as diffusers' LoRA training scripts write it (huggingface_hub's
    ``ModelCard`` from diffusers' template, offline): base model, data, settings, new words, how to load it,
    tags; ``samples`` (prompt, image) are copied in as ``image_N.png`` and listed as the card's widget."""
    import shutil

    from diffusers.utils.hub_utils import MODEL_CARD_TEMPLATE_PATH, populate_model_card
    from huggingface_hub import ModelCard, ModelCardData

    folder = Path(folder)
    widget = []
    for i, (prompt, image) in enumerate(samples):
        shutil.copyfile(image, folder / f"image_{i}.png")
        widget.append({"text": prompt, "output": {"url": f"image_{i}.png"}})
    data = ModelCardData(library_name="diffusers", base_model=str(info["base_model"]), widget=widget or None)
    card = ModelCard.from_template(data, template_path=MODEL_CARD_TEMPLATE_PATH, model_description=card_text(info))
    family = FAMILY_TAGS.get(info.get("family"), "stable-diffusion")
    tags = ["text-to-image", "diffusers", "lora", "diffusers-training", family, "crossattn"]
    path = folder / "README.md"
    path.write_text(str(populate_model_card(card, tags=tags)), encoding="utf-8")
    return path


#: the model card's family tag (diffusers' scripts: sd3 / flux); any other family: stable-diffusion
FAMILY_TAGS = {
    "StableDiffusionXLPipeline": "stable-diffusion-xl",
    "StableDiffusion3Pipeline": "sd3",
    "FluxPipeline": "flux",
}
JOINT = ("StableDiffusion3Pipeline", "FluxPipeline")  # whose LoRA adapts a transformer's attention


def card_text(info: dict) -> str:
    """The model card's description: what was trained on what, and the loading code for both libraries."""
    words = info.get("new_words") or {}
    lines = [
        f"# LoRA of {info['base_model']}",
        "",
        f"Rank {info['rank']} LoRA (peft) of the {'transformer' if info.get('family') in JOINT else 'U-Net'}'s attention"
        + (f" and its 3x3 convolutions (rank {info['convs']})" if info.get("convs") else "")
        + (", and of the text encoders" if info.get("text_encoder") else "")
        + f", fine-tuned with `crossattn finetune` on {info['data']} ({info.get('images', '?')} images"
        + (f", {info['prior_images']} prior images" if info.get("prior_images") else "")
        + f"); {info.get('steps', '?')} steps of {info.get('batch_size', '?')} at learning rate {info.get('lr', '?')}.",
        "",
    ]
    if words:
        lines += [f"New words (embedding rows trained on every CLIP tower): {', '.join(words)}.", ""]
    lines += ["## Use it", "", "```python", "from diffusers import DiffusionPipeline", ""]
    lines += [f'pipe = DiffusionPipeline.from_pretrained("{info["base_model"]}")', 'pipe.load_lora_weights("FOLDER")']
    for word in words:
        lines += [
            "from safetensors.torch import load_file",
            f'rows = load_file("FOLDER/textual_inversion/{word}.safetensors")',
            f'pipe.load_textual_inversion(rows["clip_l"], token="<{word}>", text_encoder=pipe.text_encoder, '
            "tokenizer=pipe.tokenizer)",
        ]
        if info.get("family") == "StableDiffusionXLPipeline":
            lines.append(
                f'pipe.load_textual_inversion(rows["clip_g"], token="<{word}>", text_encoder=pipe.text_encoder_2, '
                "tokenizer=pipe.tokenizer_2)"
            )
    lines += ["```", "", "Or with crossattn, which writes the new words back into their own tokens:", ""]
    lines += ["```", "crossattn maps PROMPT --model BASE --lora FOLDER --compare-base", "```", ""]
    lines += ["Validation maps over the steps: the run folder's `validation/` (`metrics.png`)."]
    return "\n".join(lines)
