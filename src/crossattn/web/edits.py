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
CLI's), the inversion before and the edit inside one cross-attention trace (``commands/edit.py``'s
``sample``), relation guidance off; so the pictures are the CLI's byte for byte, and the trace's maps show
where each changed word went in every row (the CLI's ``.compare.png`` under its pictures).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import BadArgument
from .session import Explorer, Request, check_prompt

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
    """Edit ``request`` (its prompt is the source; its image, if any, is edited) to ``target``.

    Bad input (empty or too long prompts, a target that changes nothing, bad steps, an image too narrow to
    read, ...) is a ``ValueError`` raised before sampling; unknown words and the image's conversion notes are
    ``UserWarning``s. Each call gets a fresh request pipeline (:meth:`Explorer.request_pipe`), as
    :meth:`Explorer.run` does.
    """
    import torch

    from ..attention.trace import trace
    from ..editing.image_edit import edit_image, invert_image
    from ..editing.prompt_edit import edit
    from ..editing.settings import EditSettings
    from ..models.vocabulary import warn_unknown_words

    request = explorer.check(request)  # checked, at the server's size unless it names its own
    target = check_prompt(target, "edit-to prompt", explorer.pipe.tokenizer, explorer.max_length)
    check_changes(explorer.pipe.tokenizer, request.prompt, target)
    warn_unknown_words([request.prompt, target], explorer.vocabulary)
    sampling, settings = request.sampling, EditSettings()  # the CLI's defaults
    pipe = explorer.request_pipe(sampling.scheduler)
    common = dict(negative_prompt=request.negative_prompt or None, settings=settings)
    steps = dict(num_inference_steps=sampling.steps, guidance_scale=sampling.guidance_scale)
    given = None
    if request.image is not None:  # inverted before the trace, whose maps hold the edit's steps only
        null_text_steps = NULL_TEXT_STEPS if null_text else 0
        negative = common["negative_prompt"]
        given = invert_image(
            pipe, request.image, request.prompt, null_text_steps=null_text_steps, negative_prompt=negative, **steps
        )
    with trace(pipe) as tracer:
        if given is not None:
            done = edit_image(pipe, given, request.prompt, target, **common)
            result = done.result
        else:
            generator = torch.Generator(device="cpu").manual_seed(sampling.seed)
            size = dict(height=request.height, width=request.width)
            result = edit(pipe, request.prompt, target, generator=generator, **steps, **size, **common)
    pictures = (result.source, result.edited, result.plain, request.prompt, target)
    maps, changed = tracer.maps(), result.map_words()
    if given is None:
        return Edited(*pictures, maps=maps, changed=changed)
    return Edited(*pictures, psnr=done.psnr, given=done.given.image, maps=maps, changed=changed)
