"""The files a LoRA adapter is saved in, and loading them onto a pipeline (the training side, adding and
saving adapters, is :mod:`crossattn.training.lora`).

Adapters are in diffusers' LoRA layout (``pytorch_lora_weights.safetensors`` with ``unet.`` /
``text_encoder.`` keys, loaded by ``pipe.load_lora_weights``); the rows of new words' token embeddings
(textual inversion, Gal et al., ICLR 2023) lie beside them as ``learned_embeds.safetensors``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import BadModelFolder

WEIGHT_NAME = "pytorch_lora_weights.safetensors"
TOKENS_NAME = "learned_embeds.safetensors"  # new words' embedding rows, {token string: (D,)}
#: the keys of each CLIP tower's rows in a per-word textual-inversion file (diffusers' advanced DreamBooth-LoRA script)
TOWER_KEYS = ("clip_l", "clip_g")


def tokens_file_name(tower: int) -> str:
    """The new words' rows of CLIP tower ``tower`` (0: ``text_encoder``, 1: SDXL's ``text_encoder_2``)."""
    return TOKENS_NAME if tower == 0 else TOKENS_NAME.replace(".safetensors", f"_{tower + 1}.safetensors")


def text_towers(pipe) -> list[tuple]:
    """``(tokenizer, text encoder)`` pairs of a pipeline's CLIP towers, in the pipeline's order (SDXL: two)."""
    pairs = [(pipe.tokenizer, pipe.text_encoder)]
    if getattr(pipe, "text_encoder_2", None) is not None and getattr(pipe, "tokenizer_2", None) is not None:
        pairs.append((pipe.tokenizer_2, pipe.text_encoder_2))
    return pairs


def load_lora(pipe, folder: str | Path) -> None:
    """Load a LoRA folder written by :func:`crossattn.training.lora.save_lora` (or any diffusers SD LoRA
    that fits), and the new words' embedding rows of :func:`~crossattn.training.lora.save_token_rows`
    when the folder has them."""
    path = Path(folder)
    if not (path / WEIGHT_NAME).is_file():
        raise FileNotFoundError(f"no LoRA weights ({WEIGHT_NAME}) in {path}")
    with without_text_encoder_notice(path / WEIGHT_NAME):
        try:
            pipe.load_lora_weights(str(path), weight_name=WEIGHT_NAME)
        except (OSError, RuntimeError, ValueError, KeyError, TypeError) as err:  # an adapter of another model
            from .weight_files import load_error

            raise load_error(path, err, "LoRA folder") from err
    for tower, (tokenizer, encoder) in enumerate(text_towers(pipe)):
        if (path / tokens_file_name(tower)).is_file():
            load_token_rows(pipe, path / tokens_file_name(tower), tokenizer, encoder)


class _NoTextEncoderKeys(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No LoRA keys associated to")


@contextmanager
def without_text_encoder_notice(weights: Path) -> Iterator[None]:
    """Drop diffusers' warning "No LoRA keys associated to CLIPTextModel found ..." while loading an
    adapter that has no text-encoder keys by design (U-Net only, the default); any other message, and
    that one for an adapter that does have such keys, still shows."""
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as f:
        has_text_encoder = any(k.startswith("text_encoder.") for k in f.keys())  # noqa: SIM118 (a handle, not a dict)
    logger, quiet = logging.getLogger("diffusers.loaders.lora_base"), _NoTextEncoderKeys()
    if not has_text_encoder:
        logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def load_token_rows(pipe, path: str | Path, tokenizer=None, text_encoder=None) -> list[str]:
    """Write the rows of a :func:`~crossattn.training.lora.save_token_rows` file into the embedding table of
    ``text_encoder`` (default: the pipeline's first; the tokens are in the CLIP vocabulary already; only their
    rows change). Returns the tokens set."""
    import torch
    from safetensors.torch import load_file

    tokenizer = tokenizer or pipe.tokenizer
    encoder = text_encoder or pipe.text_encoder
    rows = load_file(str(path))
    table = encoder.get_input_embeddings().weight
    replaced = base_rows(encoder)
    unknown = tokenizer.unk_token_id
    for token, row in rows.items():
        index = tokenizer.convert_tokens_to_ids(token)
        if index is None or index == unknown or row.shape != table.shape[1:]:
            raise BadModelFolder(
                f"{path}: token {token!r} (row {tuple(row.shape)}) does not fit this tokenizer/text encoder"
            )
        with torch.no_grad():
            replaced.setdefault(index, table[index].clone())  # the first load's: the base model's own row
            table[index] = row.to(table.dtype)
    return list(rows)


def base_rows(text_encoder) -> dict[int, object]:
    """The base model's rows that :func:`load_token_rows` replaced in ``text_encoder``'s embedding table,
    ``{token id: (D,) row}``, kept on the encoder so that the base model can be drawn with the same pipeline
    (:func:`crossattn.sampling.compare.lora_disabled` puts them back for a while); empty when none were."""
    return text_encoder.__dict__.setdefault("_crossattn_base_rows", {})
