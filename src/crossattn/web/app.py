"""The page: inputs on the left, the image and its attention views on the right; and launching it.

Offline and private by default: analytics off, no share link, fonts and scripts served by the local
Gradio server (its default theme uses local fonts), bound to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no telemetry

import gradio as gr  # noqa: E402

from ..config import SCHEDULER_NAMES, SamplingConfig  # noqa: E402
from ..sampling.request import DEFAULT_STRENGTH  # noqa: E402
from .answers import Page, limit_queue, reading  # noqa: E402
from .handlers import Handlers  # noqa: E402
from .session import DEFAULT_SCHEDULER, MAX_STEPS, Explorer  # noqa: E402

TITLE = "crossattn: see where each word goes"
SESSION_TTL_S = 3600  # a tab's maps are dropped an hour after its last request
MAX_SESSIONS = 64  # tabs whose maps are kept in memory (least recently used dropped first)
INTRO = (
    "Type a prompt and press **Generate**: one traced sampling gives the image and, for every word, where "
    "the image attends to it (cross-attention). **Click a pixel** of the image to see where that pixel looks "
    "in the image (self-attention) beside the words it reads (its cross-attention row). **Upload an image** "
    "to see its word maps instead (the prompt describes it), and **edit** an image through its words."
)
MAX_QUEUE = 16  # requests waiting at most (serve --max-queue); past that a request is told to retry
MODEL = "model"  # the concurrency group of every event that runs the model: one at a time (shared U-Net)


def _size_inputs(explorer: Explorer) -> list:
    """Height and width in pixels; 0: the server's size (``serve --height/--width``, or the model's own).
    0 rather than empty: Gradio's number box sends 0 when left empty."""
    from ..sampling.sizes import size_multiple

    multiple = size_multiple(explorer.pipe)
    with gr.Row():
        return [
            gr.Number(
                label=side,
                value=0,
                precision=0,
                minimum=0,
                info=f"pixels, a multiple of {multiple}; 0 = the server's {own}",
                elem_id=side,
            )
            for side, own in (("height", explorer.height), ("width", explorer.width))
        ]


def _inputs(explorer: Explorer) -> list:
    """The twelve ``/generate`` inputs, in the API's parameter order, with the CLI's defaults; the optional
    upload and its strength, then height and width, then the base-model comparison (shown with ``serve --lora``)
    come last, so API calls written for the first seven (or nine, or eleven) still work."""
    own = type(explorer.scheduler).__name__
    d = SamplingConfig()
    prompt = gr.Textbox(label="prompt", value="", placeholder="a red circle left of a blue square", elem_id="prompt")
    negative = gr.Textbox(label="negative prompt", value="", placeholder="(empty)")
    with gr.Row():
        seed = gr.Number(label="seed", value=d.seed, precision=0, minimum=0)
        steps = gr.Number(label="steps", value=d.steps, precision=0, info=f"1 to {MAX_STEPS}", elem_id="steps")
    with gr.Row():
        guidance = gr.Number(label="guidance", value=d.guidance_scale, info="classifier-free guidance; 1 = none")
        relation = gr.Number(label="relation guidance", value=d.relation_guidance, info="0 = the model alone")
    scheduler = gr.Dropdown(
        choices=[(f"{DEFAULT_SCHEDULER} ({own})", DEFAULT_SCHEDULER), *SCHEDULER_NAMES],
        value=DEFAULT_SCHEDULER,
        label="scheduler",
    )
    size = _size_inputs(explorer)
    with gr.Row():
        upload = gr.Image(
            label="image to read (optional)",  # the intro says what it does; a long label covers the buttons
            type="pil",
            image_mode=None,  # as uploaded: the library converts (transparency on white) and says so
            sources=["upload"],
            format="png",
            height=160,
            elem_id="upload",
        )
        strength = gr.Number(
            label="strength",
            value=DEFAULT_STRENGTH,
            minimum=0,
            maximum=1,
            info="with an image: how far it is noised, (0, 1]",
            elem_id="strength",
        )
    compare = gr.Checkbox(
        label="compare with the base model (the LoRA off, same seed: maps --compare-base)",
        value=False,
        visible=explorer.model_ref.lora is not None,
        elem_id="compare-base",
    )
    return [prompt, negative, seed, steps, guidance, scheduler, relation, upload, strength, *size, compare]


def _edit_box() -> tuple[list, object, list]:
    """The edit box: (its own inputs: target, null-text; its button; its outputs: gallery, PSNR line, files)."""
    gr.Markdown("**Edit** the image through its words: the prompt above is the source (it describes the upload)")
    target = gr.Textbox(label="edit to", placeholder="a red square left of a blue square", elem_id="target")
    null_text = gr.Checkbox(
        label="null-text inversion (with an image: a closer reconstruction, slower)", value=False, elem_id="null-text"
    )
    button = gr.Button("Edit", elem_id="edit")
    gallery = gr.Gallery(
        label="source (or reconstruction), edited, plain; maps below",
        columns=3,
        height=320,  # two rows: the pictures, then the changed word's map under each
        format="png",
        elem_id="edits",
    )
    info = gr.Markdown(elem_id="edit-info")
    files = gr.Files(label="downloads (the files `crossattn edit` writes)", elem_id="edit-files")
    return [target, null_text], button, [gallery, info, files]


def _views(lora: bool) -> tuple:
    """The right column: the image, the clicked pixel's panels, word overlays, with a LoRA (``lora``) the base
    model beside it, and the step, head and layer × word tabs; returns them in ``/generate``'s output order
    (less files and state)."""
    with gr.Column(scale=2):
        with gr.Row():
            image = gr.Image(
                label="image (click a pixel)", format="png", type="pil", interactive=False, elem_id="image"
            )
            pixel = gr.Image(label="self-attention of the clicked pixel", format="png", elem_id="pixel")
            reads = gr.Label(label="words the clicked pixel reads", elem_id="reads")
        overlays = gr.Gallery(
            label="word overlays (each scaled to its own max)",
            columns=7,
            height=150,
            format="png",
            elem_id="overlays",
        )
        compare = gr.Image(
            label="the base model over the LoRA",
            show_label=False,  # a label would cover the grid's column headers; the table below says what it is
            format="png",
            interactive=False,
            visible=lora,
            elem_id="compare",
        )
        numbers = gr.Markdown(visible=lora, elem_id="compare-numbers")
        with gr.Tab("steps"):
            step = gr.Slider(0, SamplingConfig.steps, value=0, step=1, label="sampling step (0 = mean)", elem_id="step")
            steps_gallery = gr.Gallery(
                label="every word at this step", columns=7, height=150, format="png", elem_id="step-maps"
            )
        with gr.Tab("heads"):
            layer = gr.Dropdown(choices=[], label="layer", allow_custom_value=True)
            heads_gallery = gr.Gallery(
                label="heads x words of this layer", columns=7, height=450, format="png", elem_id="head-maps"
            )
        with gr.Tab("layers x words"):
            grid = gr.Image(label="layer x word grid", format="png", interactive=False)
    return image, overlays, grid, step, steps_gallery, layer, heads_gallery, pixel, reads, compare, numbers


def build_app(explorer: Explorer) -> gr.Blocks:
    """The Blocks app for one loaded model; ``/generate`` and ``/edit`` are its API endpoints."""
    handlers = Handlers(explorer)
    with Page(title="crossattn", analytics_enabled=False) as app:
        gr.Markdown(f"## {TITLE}\n{INTRO}")
        state = gr.State(None, time_to_live=SESSION_TTL_S)  # this tab's Result (~6 MB of maps at 20 steps)
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                inputs = _inputs(explorer)
                button = gr.Button("Generate", variant="primary", elem_id="generate")
                files = gr.Files(
                    label="downloads (the files `crossattn generate --maps`, or `maps --image`, writes)",
                    elem_id="files",
                )
                edit_inputs, edit_button, edit_outputs = _edit_box()
            views = _views(explorer.model_ref.lora is not None)
            image, overlays, grid, step, steps_gallery, layer, heads_gallery, pixel, reads, compare, numbers = views
        for component in inputs:
            reading(component)  # values Gradio cannot read: a message naming the input
        outputs = [image, overlays, grid, step, steps_gallery, layer, heads_gallery, files, pixel, reads, state]
        outputs += [compare, numbers]  # after the state: the API's first eleven outputs stay where they were
        once = dict(concurrency_limit=1, concurrency_id=MODEL)  # generate and edit share the model: one at a time
        button.click(handlers.generate, inputs, outputs, api_name="generate", show_progress_on=image, **once)
        inputs[0].submit(
            handlers.generate, inputs, outputs, api_visibility="undocumented", show_progress_on=image, **once
        )
        edit_button.click(handlers.edit, [*inputs[:6], inputs[7], *edit_inputs], edit_outputs, api_name="edit", **once)
        step.change(  # the value as sent: each generate replaces this tab's slider (handlers.show_step checks it)
            handlers.show_step,
            [state, step],
            steps_gallery,
            api_visibility="undocumented",
            trigger_mode="always_last",
            preprocess=False,
        )
        layer.input(handlers.show_heads, [state, layer], heads_gallery, api_visibility="undocumented")
        image.select(handlers.click_pixel, [state], [pixel, reads], api_visibility="undocumented")
    return app


def launch(app: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, block: bool = True, max_queue: int = MAX_QUEUE):
    """Serve ``app`` through Gradio's queue, at most ``max_queue`` requests waiting (past that: "busy, retry",
    :func:`~crossattn.web.answers.limit_queue`); no share link. Returns ``(fastapi app, local url, None)``."""
    limit_queue(app, max_queue)
    return app.launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        ssr_mode=False,
        quiet=True,
        prevent_thread_lock=not block,
        state_session_capacity=MAX_SESSIONS,
        footer_links=["api"],
    )
