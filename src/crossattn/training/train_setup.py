"""What training starts from: the starting pipeline (a fresh init, a pipeline folder, another text
encoder put in), which embedding rows train, and the ``Accelerator`` (CPU processes over gloo, GPUs
over NCCL). Used by :class:`crossattn.training.train.Trainer`."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import torch

from ..config import ModelConfig, TrainingConfig
from .runs import RunDir


def resolve_mixed_precision(name: str) -> str:
    """``auto``: bf16 (or fp16) on a CUDA GPU, none on CPU where autocast gave no speed-up."""
    if name != "auto":
        return name
    if not torch.cuda.is_available():
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def initial_pipeline(model_config: ModelConfig, config: TrainingConfig):
    """The pipeline training starts from: a pretrained folder (fine-tuning) or a fresh init."""
    from ..models.loading import check_model_folder, placeholder_pipeline, quiet_loading
    from ..models.pipeline import CrossAttnPipeline

    if config.init_from:
        folder = check_model_folder(config.init_from)
        with quiet_loading():  # fp32 at load: no "modules ... kept in float32" warning, no loading bars
            pipe = CrossAttnPipeline.from_pretrained(folder, use_safetensors=True, dtype=torch.float32)
    else:
        pipe = placeholder_pipeline(model_config, seed=config.seed)
    if config.text_encoder_from:
        swap_text_encoder(pipe, config.text_encoder_from)
    return pipe


#: the peft adapter name of the new words' embedding rows (apart from a text-encoder LoRA's "default")
NEW_WORDS_ADAPTER = "new_words"


def train_token_rows(text_encoder, token_ids: Sequence[int]) -> torch.nn.Parameter:
    """Let only the embedding rows ``token_ids`` train; returns the ``(k, D)`` parameter that holds them.

    With the rest of the text encoder frozen (LoRA fine-tuning), a word the model never saw keeps
    its random row, which the text encoder drowns; moving that row is textual inversion's way in.
    peft's trainable tokens hold just those rows (the table itself stays frozen), so AdamW, the EMA
    and gradient clipping touch ``k × D`` numbers instead of the whole ``V × D`` table (49,408 rows:
    a masked table cost a quarter of each LoRA step).
    """
    from peft import TrainableTokensConfig, inject_adapter_in_model

    config = TrainableTokensConfig(token_indices=list(token_ids), target_modules=["token_embedding"])
    adapters = getattr(text_encoder, "peft_config", None)
    inject_adapter_in_model(config, text_encoder, adapter_name=NEW_WORDS_ADAPTER)
    # peft_config names the LoRA adapters save_lora writes; the rows are saved apart (save_token_rows)
    if adapters is None:
        del text_encoder.peft_config
    else:
        text_encoder.peft_config = adapters
    return text_encoder.get_input_embeddings().trainable_tokens_delta[NEW_WORDS_ADAPTER]


def embedding_weights(text_encoder) -> torch.Tensor:
    """The token-embedding table as the text encoder uses it: with trained rows written in (peft's
    trainable tokens, :func:`train_token_rows`) where it has them."""
    table = text_encoder.get_input_embeddings()
    if hasattr(table, "get_merged_weights"):
        return table.get_merged_weights(table.active_adapters)
    return table.weight


def merge_token_rows(text_encoder) -> None:
    """Write the trained rows (peft's trainable tokens, :func:`train_token_rows`) into a plain
    ``nn.Embedding`` in place of peft's wrapper; call it on a copy. A text encoder saved with the wrapper
    holds ``token_embedding.base_layer.weight`` and the rows' delta, which ``CLIPTextModel`` does not
    read: the folder would load with a random token table."""
    if not hasattr(text_encoder.get_input_embeddings(), "get_merged_weights"):
        return
    merged = embedding_weights(text_encoder).detach().clone()  # (V, D)
    text_encoder.set_input_embeddings(torch.nn.Embedding.from_pretrained(merged, freeze=False))


def swap_text_encoder(pipe, folder: str | Path) -> None:
    """Put the ``CLIPTextModel`` of ``folder`` (a text-encoder folder, or a CLIP folder: its text tower)
    in the pipeline, as Stable Diffusion reads a separately trained CLIP."""
    from transformers import CLIPTextModel

    from ..models.loading import quiet_loading
    from ..models.model import check_compatible, transformers_errors_only

    path = Path(folder)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"--text-encoder {folder}: no CLIPTextModel or CLIPModel folder (config.json) there")
    with quiet_loading(), transformers_errors_only():  # a CLIP folder's vision keys are meant to be skipped
        encoder = CLIPTextModel.from_pretrained(path, use_safetensors=True, dtype=torch.float32)
    check_compatible(pipe.unet, encoder)
    pipe.text_encoder = encoder


def make_accelerator(config: TrainingConfig, run: RunDir, report_to: str | None = None):
    """One ``Accelerator``: CPU processes talk over gloo (``cpu=True``), GPUs over NCCL. ``report_to``:
    ``"tensorboard"`` (refused, naming the package, where it is not installed), ``"none"``, or None: TensorBoard
    when it is installed."""
    from accelerate import Accelerator

    from ..errors import BadArgument

    tensorboard = importlib.util.find_spec("tensorboard") is not None
    if report_to == "tensorboard" and not tensorboard:
        raise BadArgument("--report-to tensorboard needs the tensorboard package (pip install tensorboard)")
    if report_to not in (None, "tensorboard", "none"):
        raise BadArgument(f"--report-to {report_to!r} is not accepted; choices: tensorboard, none")
    return Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=resolve_mixed_precision(config.mixed_precision),
        gradient_accumulation_steps=config.grad_accum,
        log_with="tensorboard" if tensorboard and report_to != "none" else None,
        project_dir=str(run.root),
    )
