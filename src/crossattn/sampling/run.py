"""Running a sampling job: load the pipeline a request asks for, sample its images in batches
(each with its own generator, so batching never changes an image), and write every file.

    from crossattn.sampling import ModelRef, SamplingRequest, run
    run(SamplingRequest(["a red circle left of a blue square"], seed=3, out="outputs"), ModelRef.resolve())
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .model_ref import ModelRef
from .outputs import (
    ImageJob,
    plan,
    planned_files,
    relation_fields,
    scheduler_name,
    sidecar,
    write_image,
    write_maps,
)
from .request import DEFAULT_BATCH_SIZE, SamplingRequest


def check_unet(pipe, maps=None) -> None:
    """Maps need a ``UNet2DConditionModel`` or a transformer of a traced family; say so for any other (and for
    self-attention maps ``maps`` asks of a family whose self-attention has no softmax: Sana)."""
    from ..attention.families import family_of, pipeline_denoiser
    from ..attention.layers import is_joint
    from ..errors import BadArgument

    denoiser = pipeline_denoiser(pipe)
    if family_of(denoiser) is None and not is_joint(denoiser):
        found = type(denoiser).__name__ if denoiser is not None else "no unet"
        raise ValueError(
            f"{type(pipe).__name__} has {found}; attention maps need a UNet2DConditionModel denoiser "
            "(SD-1.5, SDXL, crossattn) or a transformer of a traced family (SD3, SD3.5, Flux, Flux.2, Qwen-Image, "
            "PixArt-Σ, Sana)"
        )
    family = family_of(denoiser)
    wants_self = maps is not None and (maps.self_attn_pixel is not None or maps.kind == "self")
    if wants_self and family is not None and family.no_softmax == ("attn1",):  # Sana: linear self-attention
        raise BadArgument(
            f"{family.name}'s self-attention (attn1) is linear attention: it has no softmax map to draw; leave out "
            "--self-attn-pixel (its cross-attention maps work)"
        )


def call_kwargs(pipe, request: SamplingRequest) -> dict[str, Any]:
    """The request's pipeline arguments the pipeline takes: relation guidance is crossattn's own, so a
    diffusers pipeline (SD3 and Flux take no ``**kwargs``) is not handed it; the guidance goes where the
    family reads it (Qwen-Image: ``true_cfg_scale``, :func:`~crossattn.attention.families.guided_arguments`)."""
    from ..attention.families import family_of, guided_arguments, pipeline_denoiser
    from ..errors import BadArgument
    from ..models.loading import takes_argument

    kwargs = request.pipeline_kwargs()
    if not takes_argument(pipe, "relation_guidance"):
        kwargs.pop("relation_guidance")
    denoiser = pipeline_denoiser(pipe)
    kwargs = guided_arguments(family_of(denoiser), denoiser, kwargs)
    if kwargs.get("negative_prompt") is None:  # the pipeline's own default (PixArt-Σ's and Sana's is "", not None)
        kwargs.pop("negative_prompt", None)
    elif not takes_argument(pipe, "negative_prompt"):  # Flux.2 Klein: its guidance runs an empty prompt of its own
        raise BadArgument(f"{type(pipe).__name__} takes no negative prompt; leave out --negative")
    return kwargs


def load(request: SamplingRequest, model: ModelRef, quiet: bool = False):
    """The pipeline ``request`` samples with: ``model`` with the request's scheduler, on its device,
    without loading bars (and without the sampling bar when ``quiet``). Warns, naming them, about
    prompt words the model never saw in training; checks the request's size against the model
    (:func:`crossattn.sampling.sizes.check_size`) and, with maps asked for, that the denoiser can be traced."""
    from ..models.vocabulary import warn_unknown_words
    from .sizes import check_size

    warn_unknown_words(request.prompts, model.vocabulary())
    pipe = model.load(request.scheduler, request.device, request.dtype)
    if quiet:
        pipe.set_progress_bar_config(disable=True)
    check_size(pipe, request.height, request.width)
    request.check_fits(pipe)  # a size or upscale the memory cannot hold: refused with the estimate
    if request.maps is not None:
        check_unet(pipe, request.maps)
    return pipe


def sample(pipe, jobs: list[ImageJob], request: SamplingRequest):
    """The images of ``jobs`` (any prompts) in one batch; each image has its own generator seeded
    ``job.seed``, so an image is the one it would be alone or with other prompts.

    With ``request.maps`` the batch is sampled inside a trace; returns (images, maps or None).
    """
    import torch

    from ..attention.trace import trace

    generators = [torch.Generator(device="cpu").manual_seed(j.seed) for j in jobs]
    traced = trace(pipe, **request.maps.trace_kwargs()) if request.maps is not None else contextlib.nullcontext()
    with traced as tracer:
        images = pipe(prompt=[j.prompt for j in jobs], generator=generators, **call_kwargs(pipe, request)).images
    return images, tracer.maps() if tracer is not None else None


def image_sidecar(pipe, job: ImageJob, request: SamplingRequest, model: ModelRef, size) -> dict[str, Any]:
    """The sidecar of one image: :func:`sidecar` plus what relation guidance did with its prompt."""
    meta = sidecar(job, request, scheduler_name(pipe), model.identity(), size)
    if "relation_guidance" not in call_kwargs(pipe, request):  # the pipeline has none
        meta["relation_guidance"] = 0.0
    meta.update(relation_fields(pipe, job.prompt, request.relation_guidance))
    return meta


def sample_and_write(pipe, jobs: list[ImageJob], request: SamplingRequest, model: ModelRef) -> list[Path]:
    """Sample one batch of images and write each with its sidecar (and maps); returns the paths written."""
    images, maps = sample(pipe, jobs, request)
    written = []
    for i, (job, image) in enumerate(zip(jobs, images, strict=True)):
        meta = image_sidecar(pipe, job, request, model, image.size)
        written += write_image(job, image, meta)
        if maps is not None:
            written += write_maps(maps.subset([i]), image, job.png, meta)
    return written


def run(
    request: SamplingRequest,
    model: ModelRef | None = None,
    quiet: bool = False,
    on_written: Callable[[Path], Any] | None = None,
) -> list[Path]:
    """Plan every file (refusing to overwrite unless ``request.overwrite``, before anything loads),
    load ``model`` (default: the shipped model), sample ``request.batch_size`` images at a time and
    write them; ``on_written`` hears of each file as it is written. Returns every path written."""
    from ..files import refuse_overwrite

    if request.image is not None:  # a silent fallback to noise would give maps of another picture
        raise ValueError(
            f"image {request.image}: run() samples from noise; the maps of a given image come from "
            "crossattn.maps_of_image (crossattn maps --image)"
        )
    model = model if model is not None else ModelRef.resolve()
    jobs = plan(request)
    refuse_overwrite(planned_files(request, jobs), request.overwrite)
    pipe = load(request, model, quiet)
    size = request.batch_size or DEFAULT_BATCH_SIZE
    written = []
    for start in range(0, len(jobs), size):
        for path in sample_and_write(pipe, jobs[start : start + size], request, model):
            written.append(path)
            if on_written is not None:
                on_written(path)
    return written
