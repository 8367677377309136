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
    if (path / TOKENS_NAME).is_file():
        load_token_rows(pipe, path / TOKENS_NAME)


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


def load_token_rows(pipe, path: str | Path) -> list[str]:
    """Write the rows of a :func:`~crossattn.training.lora.save_token_rows` file into the pipeline's
    embedding table (the tokens are in the CLIP vocabulary already; only their rows change). Returns the
    tokens set."""
    import torch
    from safetensors.torch import load_file

    rows = load_file(str(path))
    table = pipe.text_encoder.get_input_embeddings().weight
    unknown = pipe.tokenizer.unk_token_id
    for token, row in rows.items():
        index = pipe.tokenizer.convert_tokens_to_ids(token)
        if index is None or index == unknown or row.shape != table.shape[1:]:
            raise BadModelFolder(
                f"{path}: token {token!r} (row {tuple(row.shape)}) does not fit this tokenizer/text encoder"
            )
        with torch.no_grad():
            table[index] = row.to(table.dtype)
    return list(rows)
