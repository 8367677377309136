"""Prompt-to-prompt edits of an image the model did not draw (issue 25): ``crossattn.edit_image``.

    edited = crossattn.edit_image(pipe, "drawing.png", "a red circle", "a blue circle", null_text_steps=10)
    edited.result.edited, edited.reconstruction, edited.psnr

The first prompt describes the given image. The image is brought to the model's input as for its maps
(:mod:`crossattn.sampling.given_image`), inverted to the noise that draws it again
(:mod:`crossattn.sampling.inversion`: DDIM, or null-text with ``null_text_steps`` > 0), and
:func:`crossattn.edit` samples every row from that noise with the DDIM scheduler (deterministic, so the
source row is the reconstruction) and, after null-text inversion, the optimised null text states.
For the first ``pinned_steps`` (:class:`crossattn.editing.settings.EditSettings`) the source row
is put back on the inversion's path after each step (Direct Inversion, Ju et al., ICLR 2024): the maps
and latents the target takes from it are then the given image's, not those of a guided path drifting
from it. After DDIM
inversion that is the inversion path, for the first 40 % of the steps. After null-text inversion it is
the path the states were fitted along (:attr:`Inversion.sampling_path`), at every step: the states act
as fitted only there, and freely sampled a Pillow drawing's source row swapped its two objects (18.7
against 41.9 dB with Adam at 3e-2: the float differences of the batch were enough); pinned to the DDIM
path instead, one lost its layout (16 dB against 39.6: docs/benchmarks.md).
A source prompt that does not describe the image still runs; the reconstruction's PSNR says how well.
Local blending keeps, by default for a given image, every pixel outside the edited object the source's
(``object_blend``: the changed word's region narrowed to the image's own object); Direct Inversion proper,
the targets moved by the source row's corrections at every step too, is ``direct_inversion=True``
(:mod:`crossattn.editing.direct_inversion`; issue 41, docs/benchmarks.md). ``source_negative=True`` guides the
targets against the source caption (their unconditional rows; the plain row keeps the negative prompt), as
negative-prompt inversion edits (Miyake et al., 2023); ``feature_steps`` injects the source's decoder features
(Plug-and-Play: :mod:`crossattn.editing.feature_injection`). ``tune_steps`` fits a small LoRA on the image with
its source caption first (UniTune / Imagic: :mod:`crossattn.editing.image_tuning`); the inversion and the edit
run with it, and it is off the pipeline again after each.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from ..config import SamplingConfig
from ..errors import BadArgument
from ..sampling.given_image import given_picture, image_latents
from ..sampling.inversion import Inversion, NullText, ddim_scheduler, invert, psnr, scheduler_swapped
from ..sampling.request import MAX_NULL_TEXT_STEPS


@dataclass
class GivenInversion:
    """A given image at the model's size, its inversion, and what was done to it to fit the model."""

    image: Any  # PIL.Image, RGB at the model's size
    inversion: Inversion
    notes: tuple[str, ...]
    prompt: str
    num_inference_steps: int
    guidance_scale: float
    null_text_steps: int
    tuned: Any = None  # a TunedAdapter (editing.image_tuning) when the inversion ran on a per-image fit

    @property
    def tune_steps(self) -> int:
        """The steps of the per-image fit the inversion ran with (0: none)."""
        return self.tuned.steps if self.tuned is not None else 0

    def adapter(self, pipe):
        """The per-image fit on ``pipe`` while a ``with`` runs (nothing when there is none)."""
        from .image_tuning import adapter_added

        return nullcontext() if self.tuned is None else adapter_added(pipe, self.tuned.config, self.tuned.weights)


@dataclass
class ImageEdit:
    """An edit of a given image: ``result`` as :func:`crossattn.edit` returns it, whose ``source`` is the
    reconstruction of the given image; ``psnr`` compares the two (dB)."""

    result: Any  # EditResult
    given: GivenInversion
    psnr: float

    @property
    def reconstruction(self):
        return self.result.source


def invert_image(
    pipe,
    image,
    prompt: str,
    *,
    num_inference_steps: int = SamplingConfig.steps,
    guidance_scale: float = SamplingConfig.guidance_scale,
    null_text_steps: int = 0,
    negative_prompt: str | None = None,
    tune_steps: int = 0,
    tuning=None,
) -> GivenInversion:
    """Read ``image`` (a path or a PIL image), fit it to the model and invert it with ``prompt``.

    ``tune_steps`` > 0: a LoRA fitted on the image with ``prompt`` first (``tuning``, a
    :class:`~crossattn.editing.image_tuning.TuningConfig`: how), the inversion run with it; the result keeps
    its weights (``tuned``) for the edit, and the pipeline is left without it.
    Run it outside a :func:`crossattn.trace`, whose maps should hold the edit's steps only."""
    from .settings import check_tune_steps

    whole = isinstance(null_text_steps, int) and not isinstance(null_text_steps, bool)
    if not whole or not 0 <= null_text_steps <= MAX_NULL_TEXT_STEPS:
        raise BadArgument(
            f"null_text_steps {null_text_steps!r}; give a whole number from 0 to {MAX_NULL_TEXT_STEPS} "
            "(0 = DDIM inversion alone)"
        )
    check_tune_steps(tune_steps)
    given, notes = given_picture(pipe, image)
    latents = image_latents(pipe, given)
    tuned = None
    if tune_steps:
        from .image_tuning import tune

        tuned = tune(pipe, latents, prompt, tune_steps, tuning)
    out = GivenInversion(given, None, notes, prompt, num_inference_steps, guidance_scale, null_text_steps, tuned)
    with out.adapter(pipe):
        out.inversion = invert(
            pipe,
            latents,
            prompt,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            null_text_steps=null_text_steps,
            negative_prompt=negative_prompt,
        )
    return out


def edit_image(
    pipe, image, source: str, target: str, settings=None, *, null_text_steps: int = 0, tuning=None, **kwargs
) -> ImageEdit:
    """Edit a given image from ``source`` (its description) to ``target``, keeping the rest.

    ``image``: a path, a PIL image, or a :class:`GivenInversion` from :func:`invert_image` (then its prompt,
    steps and guidance are used). ``settings`` and the other ``kwargs`` are :func:`crossattn.edit`'s
    (``num_inference_steps``, ``guidance_scale``, ``negative_prompt``, ``plain``, the edit knobs); no
    ``generator``: the rows start from the inverted noise (a recolouring's reference, a fixed seed's), DDIM draws none.
    With ``tune_steps`` the image is inverted, and edited, on a LoRA fitted to it (``tuning``: how, a
    :class:`~crossattn.editing.image_tuning.TuningConfig`); a :class:`GivenInversion` must have been made with
    the same ``tune_steps`` (:func:`invert_image`'s)."""
    from .prompt_edit import edit
    from .settings import EditSettings

    if "generator" in kwargs:
        raise ValueError("edit_image samples from the inverted image, not from a generator's noise; drop generator")
    steps = kwargs.pop("num_inference_steps", SamplingConfig.steps)
    guidance = kwargs.pop("guidance_scale", SamplingConfig.guidance_scale)
    negative = kwargs.pop("negative_prompt", None)
    settings = EditSettings.taken(settings, kwargs)  # names a bad settings
    given = image
    if not isinstance(image, GivenInversion):
        given = invert_image(
            pipe,
            image,
            source,
            num_inference_steps=steps,
            guidance_scale=guidance,
            null_text_steps=null_text_steps,
            negative_prompt=negative,
            tune_steps=settings.tune_steps,
            tuning=tuning,
        )
    elif given.prompt != source:
        raise ValueError(f"the inversion was made with {given.prompt!r}; edit from that source prompt, not {source!r}")
    elif given.tune_steps != settings.tune_steps:
        raise ValueError(
            f"the inversion ran on a {given.tune_steps}-step per-image fit, the settings ask for tune_steps "
            f"{settings.tune_steps}; invert with invert_image(..., tune_steps={settings.tune_steps})"
        )
    settings = pinning_chosen(given, settings, kwargs, source, target)
    if settings.source_negative:  # rows [source, target, plain, reference]: the target against the source prompt
        extra = bool(kwargs.get("plain", True)) + bool(settings.recolour)
        negative = [negative or "", source] + [negative or ""] * extra
    swapped = scheduler_swapped(pipe, ddim_scheduler(pipe))
    with given.adapter(pipe), swapped, NullText(pipe, given.inversion.null_embeddings, rows=1):
        result = edit(
            pipe,
            source,
            target,
            settings,
            latents=given.inversion.latents,
            source_path=given.inversion.sampling_path,  # x after each step, high to low: [x_{T-1}, …, x_0]
            num_inference_steps=given.num_inference_steps,
            guidance_scale=given.guidance_scale,
            negative_prompt=negative,
            **kwargs,
        )
    return ImageEdit(result, given, psnr(result.source, given.image))


def pinning_chosen(given: GivenInversion, settings, kwargs: dict, source: str, target: str):
    """The edit's :class:`~crossattn.editing.settings.EditSettings`, from ``settings`` or the knobs
    among ``kwargs`` (taken out of it, as :func:`crossattn.edit` takes them), with ``pinned_steps`` left
    as ``None`` chosen by the inversion and ``recolour`` left as ``None`` by the words changed
    (:meth:`~crossattn.editing.settings.EditSettings.pinned_for`)."""
    from .colour_words import colour_edit
    from .settings import EditSettings

    settings = EditSettings.taken(settings, kwargs)  # names a bad settings
    colour = colour_edit(source, target)  # the source and target prompts change colour words only
    return settings.pinned_for(null_text=bool(given.inversion.null_text_path), colour_edit=colour)
