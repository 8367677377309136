"""Find and load a pipeline: the shipped default model, or any diffusers folder by path."""

from __future__ import annotations

import contextlib
import functools
import json
import warnings
from collections.abc import Iterator
from pathlib import Path

from ..config import ModelConfig
from ..errors import BadModelFolder, MissingFile
from . import PRETRAINED_DIR
from .model import set_scheduler  # noqa: F401 (loading's own name for it since before)
from .weight_files import check_weight_files, load_error

PLACEHOLDER = "untrained-placeholder"
#: The pipeline classes ``--model`` loads: ours, and the text-to-image pipelines of the families whose attention
#: crossattn traces (:mod:`crossattn.attention.families`; SD3.5 folders are ``StableDiffusion3Pipeline`` ones).
SUPPORTED_PIPELINES = (
    "CrossAttnPipeline",
    "StableDiffusionPipeline",
    "StableDiffusionXLPipeline",
    "StableDiffusion3Pipeline",
    "FluxPipeline",
    "Flux2Pipeline",
    "Flux2KleinPipeline",
    "QwenImagePipeline",
    "PixArtSigmaPipeline",
    "SanaPipeline",
)


def default_model_dir() -> Path:
    """Where the default model ships: ``crossattn/pretrained`` inside the package."""
    return PRETRAINED_DIR


def has_default_model() -> bool:
    return (PRETRAINED_DIR / "model_index.json").is_file()


def check_model_folder(path: str | Path) -> Path:
    """The pipeline folder ``path`` names: ``path`` itself, or ``path/final`` for a run folder (what
    ``--out`` of ``crossattn train`` / ``finetune`` was); else a clear error."""
    folder = Path(path)
    if not folder.exists():
        raise MissingFile(f"model folder {folder} does not exist")
    for candidate in (folder, folder / "final"):
        if (candidate / "model_index.json").is_file():
            check_pipeline_class(candidate)
            check_weight_files(candidate)  # truncated or broken safetensors: named before diffusers trips on them
            return candidate
    raise BadModelFolder(
        f"{folder} is not a diffusers pipeline folder (no model_index.json in it or in its final/); "
        "expected a folder written by save_pretrained, e.g. RUN/final, or the run folder RUN"
    )


def check_pipeline_class(folder: Path) -> str:
    """The pipeline class a folder's ``model_index.json`` names, if crossattn loads it; else one clear error."""
    try:
        name = json.loads((folder / "model_index.json").read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError) as err:
        raise BadModelFolder(f"{folder / 'model_index.json'} is not a readable model index ({err})") from None
    if name not in SUPPORTED_PIPELINES:
        raise BadModelFolder(
            f"{folder} holds a {name or 'pipeline of no named class'}; crossattn loads {', '.join(SUPPORTED_PIPELINES)} "
            "folders"
        )
    return name


def takes_argument(pipe, name: str) -> bool:
    """Whether the pipeline's ``__call__`` takes ``name`` (a tracer's call wrapper shows the pipeline's own
    signature: it is ``functools.wraps``-ed). The signature is read once per pipeline class, not per image."""
    return name in call_parameters(type(pipe))


def call_parameters(cls) -> frozenset[str]:
    """The parameter names of a pipeline class's ``__call__``, read once per pipeline's own ``__call__``: a
    tracer's per-trace subclass is looked up by the function it wraps, so the cache never keeps that class
    (its call wrapper holds the tracer and its maps: a server would keep every request's)."""
    import inspect

    return _parameters(inspect.unwrap(cls.__call__))


@functools.cache
def _parameters(call) -> frozenset[str]:
    import inspect

    return frozenset(inspect.signature(call).parameters)


def torch_dtype(name: str | None):
    """The torch dtype ``--dtype`` names (None: float32)."""
    import torch

    return getattr(torch, name or "float32")


def check_lora_folder(path: str | Path) -> Path:
    """The LoRA folder ``path`` names: ``path`` itself, or ``path/final`` for a ``crossattn finetune`` run."""
    from .lora_files import WEIGHT_NAME

    folder = Path(path)
    if not folder.exists():
        raise MissingFile(f"LoRA folder {folder} does not exist")
    for candidate in (folder, folder / "final"):
        if (candidate / WEIGHT_NAME).is_file():
            check_weight_files(candidate, "LoRA folder")
            return candidate
    raise MissingFile(
        f"no LoRA weights ({WEIGHT_NAME}) in {folder} or in its final/; expected crossattn finetune's OUT or OUT/final"
    )


#: transformers' logger of "`CLIPImageProcessor` requires torchvision (not installed); falling back to
#: `CLIPImageProcessorPil`": SD3's and Flux's pipelines name image processors they load none of.
IMPORT_NOTICES = "transformers.utils.import_utils"
#: transformers' logger of "Unrecognized keys in `rope_parameters` for 'rope_type'='default': {'mrope_section'}":
#: Qwen2.5-VL's own config (Qwen-Image's text encoder) carries the multimodal RoPE sections its validation does not list.
ROPE_NOTICES = "transformers.modeling_rope_utils"
#: diffusers' logger of "An error occurred while trying to fetch FOLDER: ...", logged before the error it raises
#: (which crossattn reports in its one line), and of "Some weights of ... are newly initialized: [...]"
FETCH_NOTICES = "diffusers.models.modeling_utils"


def _loading_notice(record) -> bool:
    """Whether diffusers' loading logger shows ``record``: the error line before a load error is dropped; "Some
    weights ... are newly initialized" (they start random) becomes a one-line warning instead."""
    message = record.getMessage()
    if "newly initialized" in message:
        warnings.warn(message.splitlines()[0], stacklevel=2)
    return not (message.startswith("An error occurred while trying to fetch") or "newly initialized" in message)


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """diffusers' and transformers' loading bars off while loading, and transformers' notices that an image
    processor falls back to its PIL version (:data:`IMPORT_NOTICES`) and of Qwen2.5-VL's RoPE sections
    (:data:`ROPE_NOTICES`), warnings only, and diffusers' loading notices in crossattn's form (:func:`_loading_notice`);
    all put back after."""
    import logging

    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    was_on = [(lib, lib.is_progress_bar_enabled()) for lib in (diffusers_logging, transformers_logging)]
    for lib, _ in was_on:
        lib.disable_progress_bar()
    loggers = [logging.getLogger(name) for name in (IMPORT_NOTICES, ROPE_NOTICES)]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    fetch = logging.getLogger(FETCH_NOTICES)
    fetch.addFilter(_loading_notice)
    try:
        yield
    finally:
        fetch.removeFilter(_loading_notice)
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        for lib, on in was_on:
            if on:
                lib.enable_progress_bar()


def absent_components(folder: Path) -> dict[str, None]:
    """Components the folder's ``model_index.json`` lists as ``[null, null]`` (an SD3 folder saved without its
    T5 encoder): ``from_pretrained`` wants each named as None."""
    index = json.loads((folder / "model_index.json").read_text())
    return {name: None for name, value in index.items() if value == [None, None]}


def load_pipeline(
    path: str | Path | None = None,
    scheduler: str | None = None,
    device: str | None = None,
    lora: str | Path | None = None,
    dtype: str | None = None,
):
    """Load a pipeline folder, or the default model when ``path`` is None.

    A ``CrossAttnPipeline`` folder loads as one; any other diffusers text-to-image folder
    (e.g. a Stable Diffusion download) loads through ``DiffusionPipeline``. Weights come from
    safetensors only. Until a trained default model ships, ``path=None`` gives an untrained,
    reproducibly initialised placeholder of the default config (with a warning). ``lora``: a LoRA
    folder (``crossattn finetune`` output, diffusers layout) loaded on top. ``path`` and ``lora`` may
    also be run folders (their ``final/`` is loaded). ``dtype``: ``"float32"`` (default), ``"float16"``
    or ``"bfloat16"``. Loading draws no progress bars.
    """
    placeholder = path is None and not has_default_model()
    folder = None if placeholder else check_model_folder(path if path is not None else PRETRAINED_DIR)
    return load_resolved(folder, scheduler, device, check_lora_folder(lora) if lora is not None else None, dtype)


def check_config_types(folder: Path, pipe) -> None:
    """Each model component's config values whose ``__init__`` argument is a plain ``bool``, ``int`` or ``float`` are
    one (a finite number): diffusers builds a model from ``"resnet_out_scale_factor": [4, 8]`` and fails only when
    it runs. A :class:`BadModelFolder` naming the file, the key and the value otherwise."""
    import inspect
    import math

    for name, component in pipe.components.items():
        config = getattr(component, "config", None)
        if not hasattr(component, "forward") or not isinstance(config, dict):
            continue
        for key, arg in inspect.signature(type(component).__init__).parameters.items():
            value = config.get(key, arg.default)
            kind = arg.annotation if arg.annotation in (bool, int, float) else None
            if kind is None or value is arg.default:
                continue
            number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            if not (isinstance(value, bool) if kind is bool else number and (kind is float or isinstance(value, int))):
                raise BadModelFolder(
                    f"model folder {folder}: {name}/config.json says {key} {value!r}; give a {kind.__name__}"
                )


def refuse_dual_attention(folder: Path) -> None:
    """A :class:`BadModelFolder` for a ``unet/config.json`` with a truthy ``dual_cross_attention``, before anything
    loads: diffusers builds a DualTransformer2DModel for it, whose forward the U-Net's own call does not fit, and
    loading it first printed every newly initialised weight's name (a few hundred) above the one-line error. A
    config that cannot be read is left to the loading's own error."""
    try:
        config = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    dual = config.get("dual_cross_attention") if isinstance(config, dict) else None
    if dual:
        raise BadModelFolder(
            f"model folder {folder}: unet/config.json says dual_cross_attention {dual!r}, which diffusers' "
            "U-Net cannot run; give false"
        )


def load_resolved(
    folder: Path | None,
    scheduler: str | None = None,
    device: str | None = None,
    lora: Path | None = None,
    dtype: str | None = None,
):
    """:func:`load_pipeline` for folders already resolved (:class:`crossattn.sampling.ModelRef`):
    ``folder`` a pipeline folder (None: the untrained placeholder), ``lora`` a LoRA folder; neither is
    looked up again."""

    if folder is None:
        warnings.warn("no trained default model is shipped yet; using an untrained placeholder", stacklevel=3)
        pipe = placeholder_pipeline()
        if dtype is not None:
            pipe.to(dtype=torch_dtype(dtype))
    else:
        refuse_dual_attention(folder)
        with quiet_loading():
            # Weights ship in fp16; sample in fp32 (CPU has no fast fp16). Cast while loading, as
            # diffusers asks: a later pipe.to(float32) warns about modules to keep in float32.
            try:
                pipe = pipeline_class(folder).from_pretrained(
                    folder, use_safetensors=True, dtype=torch_dtype(dtype), **absent_components(folder)
                )
            except (OSError, RuntimeError, ValueError, LookupError, TypeError, AttributeError) as err:  # the folder's
                raise load_error(folder, err) from err
        check_config_types(folder, pipe)
    if lora is not None:
        from .lora_files import load_lora

        with quiet_loading():
            load_lora(pipe, lora)
    if scheduler is not None:
        set_scheduler(pipe, scheduler)
    if device is not None:
        pipe.to(device)
    pipe.set_progress_bar_config(leave=False)
    return pipe


def pipeline_class(folder: Path):
    """``CrossAttnPipeline`` for our folders, ``DiffusionPipeline`` (auto class) for others."""
    from diffusers import DiffusionPipeline

    from .pipeline import CrossAttnPipeline

    name = json.loads((folder / "model_index.json").read_text()).get("_class_name")
    return CrossAttnPipeline if name == CrossAttnPipeline.__name__ else DiffusionPipeline


def placeholder_pipeline(config: ModelConfig | None = None, seed: int = 0):
    """The default config, randomly but reproducibly initialised, with the shipped tokenizer;
    in eval mode, as ``from_pretrained`` leaves a loaded pipeline."""
    from .model import build_components
    from .pipeline import CrossAttnPipeline

    pipe = CrossAttnPipeline(**build_components(config or ModelConfig(), seed=seed))
    pipe.unet.eval()
    pipe.text_encoder.eval()
    return pipe
