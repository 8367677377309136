"""The page's edit box: change the image through its words, as ``crossattn edit`` does.

Without an uploaded image, :func:`crossattn.edit` samples the prompt (the source) and the "edit to"
prompt (the target) from one seeded noise, the target with and without the source's attention
(``crossattn edit SOURCE --to TARGET --seed S``). With one, :func:`crossattn.edit_image` inverts it with
the prompt as its description (DDIM, or with null-text inversion, 10 optimiser steps a step, as
``crossattn edit --image FILE --null-text``) and samples every row from the inverted noise; the source
row is then the reconstruction, and its PSNR against the image says how well the inversion held.
Both take the edit settings' defaults (the CLI's) and sample with relation guidance off.
"""

from __future__ import annotations

from dataclasses import dataclass

from .session import Explorer, Request, check_prompt

NULL_TEXT_STEPS = 10  # `crossattn edit --null-text` without N


@dataclass
class Edited:
    """The three pictures of an edit and, for an uploaded image, how well it was reconstructed."""

    source: object  # PIL: the source prompt's image, or the reconstruction of the uploaded image
    edited: object  # PIL: the target with the source's attention
    plain: object  # PIL: the target from the same noise, no control
    source_prompt: str
    target_prompt: str
    psnr: float | None = None  # dB, reconstruction against the uploaded image as the model read it
    given: object = None  # PIL: the uploaded image as the model read it (RGB, the model's size)

    def gallery(self) -> list[tuple[object, str]]:
        """``(picture, caption)``: source (or reconstruction), edited, plain."""
        first = "reconstruction" if self.given is not None else "source"
        return [
            (self.source, f"{first}: {self.source_prompt}"),
            (self.edited, f"edited: {self.target_prompt}"),
            (self.plain, f"plain: {self.target_prompt}"),
        ]


def run_edit(explorer: Explorer, request: Request, target: str, null_text: bool = False) -> Edited:
    """Edit ``request`` (its prompt is the source; its image, if any, is edited) to ``target``.

    Bad input (empty or too long prompts, bad steps, ...) is a ``ValueError`` raised before sampling;
    unknown words and the image's conversion notes are ``UserWarning``s. Each call gets a fresh
    request pipeline (:meth:`Explorer.request_pipe`), as :meth:`Explorer.run` does.
    """
    import torch

    from ..editing.image_edit import edit_image
    from ..editing.prompt_edit import edit
    from ..models.vocabulary import warn_unknown_words

    request = explorer.check(request)  # checked, at the server's size unless it names its own
    target = check_prompt(target, "edit-to prompt", explorer.pipe.tokenizer, explorer.max_length)
    warn_unknown_words([request.prompt, target], explorer.vocabulary)
    settings = request.sampling
    pipe = explorer.request_pipe(settings.scheduler)
    common = dict(
        num_inference_steps=settings.steps,
        guidance_scale=settings.guidance_scale,
        negative_prompt=request.negative_prompt or None,
    )
    if request.image is None:
        generator = torch.Generator(device="cpu").manual_seed(settings.seed)
        size = dict(height=request.height, width=request.width)
        result = edit(pipe, request.prompt, target, generator=generator, **common, **size)
        return Edited(result.source, result.edited, result.plain, request.prompt, target)
    steps = NULL_TEXT_STEPS if null_text else 0
    done = edit_image(pipe, request.image, request.prompt, target, null_text_steps=steps, **common)
    result = done.result
    return Edited(result.source, result.edited, result.plain, request.prompt, target, done.psnr, done.given.image)
