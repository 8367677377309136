"""The page's edit box: change the image through its words, as ``crossattn edit`` does.

Without an uploaded image, :func:`crossattn.edit` samples the prompt (the source) and the "edit to"
prompt (the target) from one seeded noise, the target with and without the source's attention
(``crossattn edit SOURCE --to TARGET --seed S``). With one, :func:`crossattn.edit_image` inverts it with
the prompt as its description (DDIM, or with null-text inversion, 10 optimiser steps a step, as
``crossattn edit --image FILE --null-text``) and samples every row from the inverted noise; the source
row is then the reconstruction, and its PSNR against the image says how well the inversion held.
Any U-Net family the CLI edits: on SDXL the inversion's bare U-Net passes get its added text and time
conditioning (:mod:`crossattn.sampling.added_conditioning`), and the upload is read at the model's own size
(``serve --height/--width`` sizes generated images only), as ``edit --image`` reads a file.

One job, the CLI's: the same typed :class:`~crossattn.editing.settings.EditSettings` (its defaults, the
CLI's), the inversion before and the edit inside one cross-attention trace (:mod:`crossattn.editing.job`'s
``sample``), relation guidance off; so the pictures are the CLI's byte for byte, and the trace's maps show
where each changed word went in every row (the CLI's ``.compare.png`` under its pictures).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadArgument
from .session import UPLOAD, Explorer, Request, check_prompt, save_upload

NULL_TEXT_STEPS = 10  # `crossattn edit --null-text` without N
ROWS = {"source": 0, "edited": 1, "plain": 2}  # the rows of the edit's batch, as the trace records them


@dataclass
class Edited:
    """The three pictures of an edit, its maps and, for an uploaded image, how well it was reconstructed."""

    source: object  # PIL: the source prompt's image, or the reconstruction of the uploaded image
    edited: object  # PIL: the target with the source's attention
    plain: object  # PIL: the target from the same noise, no control
    source_prompt: str
    target_prompt: str
    psnr: float | None = None  # dB, reconstruction against the uploaded image as the model read it
    given: object = None  # PIL: the uploaded image as the model read it (RGB, the model's size)
    maps: object = None  # AttentionMaps: cross-attention of the rows source, edited, plain (ROWS)
    changed: list[tuple[str | None, str]] = field(default_factory=list)  # (source word, target word) drawn
    files: list[Path] = field(default_factory=list)  # what `crossattn edit` writes (and upload.png), to download

    def gallery(self) -> list[tuple[object, str]]:
        """``(picture, caption)``: source (or reconstruction), edited, plain."""
        first = "reconstruction" if self.given is not None else "source"
        return [
            (self.source, f"{first}: {self.source_prompt}"),
            (self.edited, f"edited: {self.target_prompt}"),
            (self.plain, f"plain: {self.target_prompt}"),
        ]

    def map_panels(self, scale: int) -> list[tuple[object, str]]:
        """Under each picture, ``scale``× as the page shows it, its map of the changed word (the source word
        under the source, the target word under the others): three panels per changed word."""
        from .. import viz
        from .render import upscaled

        panels = []
        for source_word, target_word in self.changed:
            for view, word in (("source", source_word), ("edited", target_word), ("plain", target_word)):
                picture = getattr(self, view)
                if word is None:  # a word added where the source had none: nothing to draw under the source
                    panels.append((upscaled(picture, scale), f"{view}: no source word"))
                    continue
                heat = self.maps.word_map(word, image=ROWS[view])  # (H, W)
                panels.append((viz.heat_frame(heat, picture, scale=scale), f"'{word}' in {view}"))
        return panels


def check_changes(tokenizer, source: str, target: str) -> None:
    """A :class:`~crossattn.errors.BadArgument` naming ``target`` when the text encoder reads it as ``source``
    (the same tokens: case and spacing aside): the edit would change nothing."""
    if tokenizer(source).input_ids == tokenizer(target).input_ids:
        raise BadArgument(
            f"the edit-to prompt {target!r} reads as the prompt itself ({source!r}): the edit would change "
            "nothing; change a word of it, e.g. 'a red circle' -> 'a blue circle'"
        )


def run_edit(explorer: Explorer, request: Request, target: str, null_text: bool = False) -> Edited:
    """Edit ``request`` (its prompt is the source; its image, if any, is edited) to ``target``, with the CLI's
    own job (:mod:`crossattn.editing.job`'s ``sample``: the inversion, then the edit inside one trace) and its files
    (``write_outputs``), written in a new request folder beside ``upload.png`` for an upload.

    Bad input (empty or too long prompts, a target that changes nothing, bad steps, an image too narrow to
    read, ...) is a ``ValueError`` raised before sampling; unknown words and the image's conversion notes are
    ``UserWarning``s. Each call gets a fresh request pipeline (:meth:`Explorer.request_pipe`), as
    :meth:`Explorer.run` does.
    """
    from ..editing.job import plan, sample, write_outputs
    from ..editing.settings import EditSettings
    from ..models.vocabulary import warn_unknown_words

    request = explorer.check(request)  # checked, at the server's size unless it names its own
    target = check_prompt(target, "edit-to prompt", explorer.pipe.tokenizer, explorer.max_length)
    check_changes(explorer.pipe.tokenizer, request.prompt, target)
    warn_unknown_words([request.prompt, target], explorer.vocabulary)
    folder = explorer.out / uuid.uuid4().hex
    upload = save_upload(request.image, folder / UPLOAD) if request.image is not None else None
    job = edit_request(request, target, folder, upload, null_text)
    pipe = explorer.request_pipe(request.sampling.scheduler)
    result, maps = sample(pipe, job, EditSettings(), image=request.image)  # the CLI's defaults
    paths = plan(job)
    files = write_outputs(pipe, job, explorer.model_ref, paths, result, maps, image_name=UPLOAD if upload else None)
    explorer.prune()
    done, result = (result, result.result) if upload is not None else (None, result)
    pictures = (result.source, result.edited, result.plain, request.prompt, target)
    edited = Edited(*pictures, maps=maps, changed=result.map_words(), files=files + ([upload] if upload else []))
    if done is not None:
        edited.psnr, edited.given = done.psnr, done.given.image
    return edited


def edit_request(request: Request, target: str, folder: Path, upload: Path | None, null_text: bool):
    """The :class:`~crossattn.sampling.SamplingRequest` ``crossattn edit SOURCE --to TARGET`` builds for these
    settings (``--image upload.png [--null-text]`` for an upload), writing to ``folder``."""
    from ..sampling import SamplingRequest

    sized = {"image": upload} if upload is not None else {"height": request.height, "width": request.width}
    if upload is not None and null_text:
        sized["null_text_steps"] = NULL_TEXT_STEPS
    return SamplingRequest.with_config(
        (request.prompt, target), request.sampling, negative_prompt=request.negative_prompt or None, out=folder, **sized
    )
