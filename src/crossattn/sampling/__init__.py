"""The sampling job, owned by the library: one typed request → plan, run, sidecar.

:class:`SamplingRequest` says what to sample (prompts, seeds, sampler settings, maps, output folder);
:class:`ModelRef` says with which model, resolved and hashed once; :func:`plan` names every file
before anything samples, :func:`run` loads, samples and writes them, :func:`sidecar` is the JSON
beside every image. ``crossattn generate``, ``maps``, ``edit`` and ``eval``, the web explorer and
notebooks all build a request, so they agree on names, checks and files.

Importing this package imports neither torch nor diffusers; running a job does.

:mod:`.given_image` is ``crossattn.maps_of_image``: the word maps of an image the model did not draw;
:mod:`.inversion` turns such an image back into its noise (edits of it are :mod:`crossattn.editing`'s).

May import: ``crossattn.config``, ``crossattn.files``, ``crossattn.viz``, ``crossattn.models``,
``crossattn.attention``, ``crossattn.data`` (a given image's RGB conversion and crop, shared with image
folders); never editing, training, commands or web (``tests/test_import_graph.py``).
"""

from __future__ import annotations

from .model_ref import ModelRef
from .outputs import (
    ImageJob,
    maps_paths,
    plan,
    planned_files,
    relation_fields,
    scheduler_name,
    sidecar,
    unique_slugs,
    write_image,
    write_maps,
)
from .request import DEFAULT_BATCH_SIZE, MapsOptions, SamplingRequest, check_scheduler
from .run import check_unet, image_sidecar, load, run, sample, sample_and_write

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "ImageJob",
    "MapsOptions",
    "ModelRef",
    "SamplingRequest",
    "check_scheduler",
    "check_unet",
    "image_sidecar",
    "load",
    "maps_paths",
    "plan",
    "planned_files",
    "relation_fields",
    "run",
    "sample",
    "sample_and_write",
    "scheduler_name",
    "sidecar",
    "unique_slugs",
    "write_image",
    "write_maps",
]
