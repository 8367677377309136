"""The edit job of ``crossattn edit``, the explorer's edit box and notebooks alike: where its files go
(:func:`plan`), the inversion and the edit inside one cross-attention trace (:func:`sample`), and the files
(:func:`write_outputs`: the source, edited and plain PNGs, the comparison figure and the sidecar).

For ``DIR/<slug of target>-<seed>``: ``.source.png`` (the source prompt; with a given image, the image at the
model's size), ``.plain.png`` (the target from the same noise, no control), ``.edited.png`` (the target with the
source's attention), ``.compare.png`` (the three, and under each its map of the changed word), ``.json``
(both prompts, every setting, the model hash) and, with a given image, ``.reconstruction.png``.
"""

from __future__ import annotations

from pathlib import Path

from ..sampling import SamplingRequest

VIEWS = ("source", "plain", "edited")


def plan(request: SamplingRequest) -> dict[str, Path]:
    """Every output path, by role: ``source``, ``plain``, ``edited``, ``compare``, ``sidecar``."""
    from ..files import slugify

    stem = request.out / f"{slugify(request.prompts[1])}-{request.seed}"
    views = (*VIEWS, "compare") + (("reconstruction",) if request.image is not None else ())
    paths = {view: stem.with_name(f"{stem.name}.{view}.png") for view in views}
    paths["sidecar"] = stem.with_suffix(".json")
    return paths


def sample(pipe, request: SamplingRequest, settings, image=None):
    """The edit inside a cross-attention trace: (result, maps of the rows source, edited, plain); with a
    given image, the result is an ``ImageEdit`` (the inversion runs first, outside the trace). ``image``: the
    given image itself in place of ``request.image``'s file (the explorer's upload, so its conversion notes name
    no server path)."""
    import torch

    from ..attention.trace import trace
    from .image_edit import edit_image, invert_image
    from .prompt_edit import edit

    source, target = request.prompts
    common = dict(negative_prompt=request.negative_prompt, settings=settings)
    given = None
    if request.image is not None:
        given = invert_image(
            pipe,
            request.image if image is None else image,
            source,
            num_inference_steps=request.steps,
            guidance_scale=request.guidance,
            null_text_steps=request.null_text_steps or 0,
            negative_prompt=request.negative_prompt,
            tune_steps=settings.tune_steps,
        )
    with trace(pipe) as tracer:
        if given is not None:
            result = edit_image(pipe, given, source, target, **common)
        else:
            generator = torch.Generator(device="cpu").manual_seed(request.seed)
            steps = dict(num_inference_steps=request.steps, guidance_scale=request.guidance)
            steps.update({k: v for k, v in (("height", request.height), ("width", request.width)) if v is not None})
            result = edit(pipe, source, target, generator=generator, **steps, **common)
    return result, tracer.maps()


def compare_figure(result, maps, pairs: list[tuple[str | None, str]]):
    """Row 1: source, plain, edited; then one row per changed word: each image's map for it."""
    from .. import viz

    rows = {"source": 0, "edited": 1, "plain": 2}  # the rows of the edit's batch
    fig, axes = viz.figure(1 + len(pairs), 3, size=2.2)
    for col, view in enumerate(VIEWS):
        image = getattr(result, view)
        axes[0][col].imshow(viz.to_array(image), interpolation="nearest")
        axes[0][col].set_title(
            f"{view}\n{result.source_prompt if view == 'source' else result.target_prompt}", fontsize=7
        )
        axes[0][col].set_axis_off()
        for row, (source_word, target_word) in enumerate(pairs, start=1):
            word = source_word if view == "source" else target_word
            if word is None:
                axes[row][col].set_axis_off()
                continue
            viz.draw_overlay(axes[row][col], maps.word_map(word, image=rows[view]), image, f"'{word}'")
    fig.tight_layout()
    return fig


def write_outputs(
    pipe, request: SamplingRequest, model, paths: dict[str, Path], result, maps, image_name: str | None = None
) -> list[Path]:
    """The three PNGs, the comparison figure and the sidecar, each written atomically; ``image_name``: what the
    sidecar calls the given image (the explorer: its upload beside it), else ``request.image``'s path."""
    from .. import viz
    from ..files import atomic_write, atomic_write_json
    from ..sampling import ImageJob, scheduler_name, sidecar
    from .settings import GIVEN_IMAGE_KNOBS

    given = None
    if request.image is not None:  # an ImageEdit: its source row is the reconstruction
        given, result = result, result.result
    pictures = {view: getattr(result, view) for view in VIEWS}
    if given is not None:
        pictures.update(source=given.given.image, reconstruction=given.reconstruction)
    written = []
    for view, image in pictures.items():
        written.append(atomic_write(paths[view], lambda tmp, image=image: image.save(tmp, format="PNG")))
    written.append(viz.save_figure(compare_figure(result, maps, result.map_words()), paths["compare"]))
    job = ImageJob(request.prompts[1], 0, request.seed, paths["edited"], paths["sidecar"], None)
    meta = sidecar(job, request, scheduler_name(pipe), model.identity(), result.edited.size)
    settings = {k: v for k, v in vars(result.settings).items() if given is not None or k not in GIVEN_IMAGE_KNOBS}
    meta.update(
        source_prompt=result.source_prompt,
        target_prompt=result.target_prompt,
        edit={**settings, "changed_words": [list(pair) for pair in result.changed]},  # pinning: given images only
        files={view: path.name for view, path in paths.items() if view != "sidecar"},
    )
    if given is not None:
        meta.update(given_image=given_image_fields(request, given, image_name))
    written.append(atomic_write_json(paths["sidecar"], meta))
    return written


def given_image_fields(request: SamplingRequest, edited, name: str | None = None) -> dict:
    """Sidecar fields of an edit of a given image: which image (``name``, else its path), how it was inverted,
    how well it came back."""
    inversion = edited.given.inversion
    return {
        "file": name or str(request.image),
        "notes": list(edited.given.notes),
        "inversion": "null-text" if request.null_text_steps else "ddim",
        "fixed_point_steps": inversion.fixed_point_steps,
        "null_text_steps": request.null_text_steps or 0,  # 0: DDIM inversion alone
        "null_text_losses": [round(x, 8) for x in inversion.null_text_losses],
        "null_text_lr": inversion.null_text_lr,  # Adam's rate of the fit kept (larger after a refit); 0 after DDIM
        "reconstruction_psnr": round(edited.psnr, 3),
    }
