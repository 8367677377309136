"""The Gradio request functions. :meth:`Handlers.generate` is the ``/generate`` API endpoint: its
parameter names are the API's (``prompt``, ``negative_prompt``, ``seed``, ``steps``, ``guidance``,
``scheduler``, ``relation_guidance``, then ``image`` and ``strength``, ``height`` and ``width`` (a size None
or 0 samples at the server's) and ``compare_base``, all optional) and its first output is the image; with
``compare_base`` (``serve --lora``) its last two are the base model beside the LoRA and each word's numbers.
:meth:`Handlers.edit` is ``/edit``: the edit box.

A user mistake (empty or too long prompt, steps 0, an unknown scheduler, ...) is a ``ValueError`` in
the library; every handler is :func:`~crossattn.web.answers.answering`, which makes it (and any
:class:`~crossattn.errors.CrossattnError`) a ``gr.Error``: a message in the page (and an error to API
clients) while the server keeps serving. A request's result lives in that
browser tab's ``gr.State``, so two tabs never see each other's maps.
"""

from __future__ import annotations

import warnings

import gradio as gr

from ..config import SamplingConfig, whole
from ..errors import BadArgument
from ..sampling.request import DEFAULT_STRENGTH
from . import render
from .answers import answering
from .edits import run_edit
from .session import DEFAULT_SCHEDULER, Explorer, Request, Result


def _shown(job, *args):
    """``job(*args)`` with its ``UserWarning``s (words the model never saw, an uploaded image converted or
    resized) as ``gr.Warning``s in the page."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)  # other categories keep the filters in force
        result = job(*args)
    for warning in caught:
        if issubclass(warning.category, UserWarning):
            gr.Warning(str(warning.message))
    return result


class Handlers:
    """Request functions bound to one loaded :class:`Explorer`."""

    def __init__(self, explorer: Explorer):
        self.explorer = explorer

    @answering
    def generate(
        self,
        prompt: str,
        negative_prompt: str = "",
        seed: float = SamplingConfig.seed,
        steps: float = SamplingConfig.steps,
        guidance: float = SamplingConfig.guidance_scale,
        scheduler: str = DEFAULT_SCHEDULER,
        relation_guidance: float = SamplingConfig.relation_guidance,
        image=None,
        strength: float = DEFAULT_STRENGTH,
        height: float | None = None,
        width: float | None = None,
        compare_base: bool = False,
        progress=gr.Progress(track_tqdm=True),  # noqa: B008 (Gradio's way to ask for a progress bar)
    ):
        """Sample one traced image at ``height`` × ``width`` pixels (None or 0: the server's size), or read the
        uploaded ``image`` (its maps, noised by ``strength``); with ``compare_base`` also the same seed with the
        server's LoRA off (``maps --compare-base``); returns the image, word overlays, grid, step and head views,
        files, state, and the comparison's grid (base row over LoRA row) and numbers."""
        request = Request.of(
            prompt, negative_prompt=negative_prompt, seed=seed, steps=steps, guidance=guidance, scheduler=scheduler,
            relation_guidance=relation_guidance, image=image, strength=strength, height=height, width=width,
            compare_base=bool(compare_base),
        )  # fmt: skip
        progress(0, desc="sampling" if image is None else "reading the image")
        result = _shown(self.explorer.run, request)
        progress(1.0, desc="drawing")
        return self.views(result)

    @answering
    def edit(
        self,
        prompt: str,
        negative_prompt: str = "",
        seed: float = SamplingConfig.seed,
        steps: float = SamplingConfig.steps,
        guidance: float = SamplingConfig.guidance_scale,
        scheduler: str = DEFAULT_SCHEDULER,
        image=None,
        target: str = "",
        null_text: bool = False,
        progress=gr.Progress(track_tqdm=True),  # noqa: B008
    ):
        """The edit box: ``prompt`` (describing ``image`` when one is uploaded, read at the model's own size)
        edited to ``target``; returns the gallery (source or reconstruction, edited, plain, then under each its
        map of every changed word), a line with the PSNR and the files ``crossattn edit`` writes, to download."""
        request = Request.of(
            prompt, negative_prompt=negative_prompt, seed=seed, steps=steps, guidance=guidance, scheduler=scheduler,
            relation_guidance=0.0, image=image,
        )  # fmt: skip
        progress(0, desc="editing" if image is None else "inverting the image")
        edited = _shown(run_edit, self.explorer, request, target, bool(null_text))
        if edited.psnr is None:
            info = f"source, edited and plain from one noise (seed {int(seed)})"
        else:
            how = "null-text" if null_text else "DDIM"
            info = f"reconstruction PSNR {edited.psnr:.2f} dB ({how} inversion; against the image as the model read it)"
        scale = render.display_scale(edited.edited)
        pictures = [(render.upscaled(picture, scale), caption) for picture, caption in edited.gallery()]
        return pictures + edited.map_panels(scale), info, [str(path) for path in edited.files]

    def views(self, result: Result) -> tuple:
        """Every output of ``/generate`` for one result (the order of ``app.GENERATE_OUTPUTS``)."""
        cross, image = result.cross, result.image
        layers = list(cross.tensors)
        return (
            render.upscaled(image),
            render.word_overlays(cross, image),
            render.layer_grid(cross, image),
            gr.Slider(minimum=0, maximum=cross.num_steps, value=0, step=1),
            render.step_overlays(cross, image, 0),
            gr.Dropdown(choices=layers, value=layers[-1]),
            render.head_overlays(cross, image, layers[-1]),
            [str(path) for path in result.files],
            None,  # the pixel panel: cleared until a pixel is clicked
            None,
            result,
            render.compare_grid(result.base, cross, image) if result.base is not None else None,
            render.compare_table(result.base.numbers) if result.base is not None else "",
        )

    @answering
    def show_step(self, result: Result | None, step: float):
        """Every word's map at one sampling step (0: mean over steps); ``step`` as the page sent it (the event
        skips Gradio's reading of the slider, which each generate replaces)."""
        if result is None:
            return None
        return render.step_overlays(result.cross, result.image, whole(step, "sampling step", 0))

    @answering
    def show_heads(self, result: Result | None, layer: str):
        """One layer's heads × words."""
        if result is None or not layer:
            return None
        if layer not in result.cross.tensors:
            raise BadArgument(f"layer {layer!r} was not recorded; layers: {', '.join(result.cross.tensors)}")
        return render.head_overlays(result.cross, result.image, layer)

    @answering
    def click_pixel(self, result: Result | None, evt: gr.SelectData):
        """A click on the image: that pixel's self-attention map and the words it reads."""
        if result is None:
            raise gr.Error("generate an image first, then click one of its pixels")
        x, y = render.to_pixel(evt.index, result.image)
        if result.self_mean is None:  # Sana: linear self-attention, no softmax map
            panel, title = None, f"pixel ({x}, {y}): this model's self-attention is linear, it has no map"
        else:
            panel = render.pixel_panel(result.self_mean, result.image, x, y)
            title = f"self-attention of pixel ({x}, {y}): where it looks"
        words = render.pixel_words(result.cross, x, y)
        return gr.Image(value=panel, label=title), gr.Label(value=words, label=render.reads_label(result.cross, x, y))
