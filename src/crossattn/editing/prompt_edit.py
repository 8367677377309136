"""``crossattn.edit``: change an image through its words with prompt-to-prompt attention control.

    result = crossattn.edit(pipe, "a red circle", "a blue circle", generator=torch.Generator().manual_seed(0))
    result.source, result.plain, result.edited  # PIL images

One pipeline call samples three rows from the same noise: the source prompt, the target under
:func:`crossattn.control` (the source's cross-attention maps for the first ``cross_steps`` of the
steps, its self-attention maps for the first ``self_steps``; Hertz et al., ICLR 2023; on the latents,
the source's for the first ``shared_steps`` and local blending outside the changed words' region) and
the target left alone (``.plain``: what the target gives without control). The three rows get the
same noise through three generators in the same state (the one given, and two copies of it).
The defaults are the ones measured by ``benchmarks/edit_consistency.py`` (docs/benchmarks.md, "Attention control").

Relation guidance (:mod:`crossattn.models.relation_guidance`) is off for edits: it moves each row's latents
with extra gradient passes through the U-Net, which would give the target a layout of its own,
defeating the edit, and which the control cannot count as sampling steps. ``relation_guidance`` is
passed as 0 to pipelines that take it; any other value is a ``ValueError``.

(The module is ``prompt_edit``, not ``edit``: a submodule named like the function would make the
package attribute ``crossattn.editing.edit`` the module or the function depending on import order.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .settings import EditSettings  # torch-free: the CLI's parser reads its defaults

if TYPE_CHECKING:  # torch is imported when an edit runs, so the CLI's parser can import this module cheaply
    import torch

#: Pipeline arguments ``edit`` sets itself.
OWN_ARGUMENTS = (
    "prompt",
    "generator",
    "num_images_per_prompt",
    "output_type",
    "return_dict",
    "latents",
    "callback_on_step_end",
    "callback_on_step_end_tensor_inputs",
)


@dataclass
class EditResult:
    """The source image, the target without control (``plain``) and with it (``edited``), all from one noise."""

    source: object  # PIL.Image.Image
    plain: object  # None when edit(..., plain=False)
    edited: object
    source_prompt: str
    target_prompt: str
    settings: EditSettings
    changed: list[tuple[str, str]]  # (source words, target words) the alignment found changed

    def map_words(self) -> list[tuple[str | None, str]]:
        """``(source word, target word)`` pairs whose maps show the edit (``crossattn edit``'s ``.compare.png``
        and the explorer's edit maps): the last word of each changed block; when words were only removed,
        the re-weighted words, else the target's last word (under the source too where the source has it)."""
        pairs = [(s.split()[-1] if s else None, t.split()[-1] if t else None) for s, t in self.changed]
        pairs = [(s, t) for s, t in pairs if t is not None]
        if not pairs:
            words = list(self.settings.reweight) or [self.target_prompt.split()[-1].lower()]
            pairs = [(w if w in self.source_prompt.lower().split() else None, w) for w in words]
        return pairs


def copy_generator(generator: torch.Generator) -> torch.Generator:
    """A new generator in the same state: it draws the same numbers."""
    import torch

    return torch.Generator(device=generator.device).set_state(generator.get_state())


def row_generators(generator, rows: int) -> list:
    """``rows`` generators in one state, so every row starts from the same noise: the one given (a fresh
    one seeded from torch's global RNG when None) and copies of it."""
    import torch

    if generator is None:
        generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ()).item()))
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be one torch.Generator (edit copies it per row), got {type(generator)}")
    return [generator] + [copy_generator(generator) for _ in range(rows - 1)]


#: the seed of a recolouring's reference row (:mod:`crossattn.editing.recolour`): the same colour every run
REFERENCE_SEED = 0


def row_latents(latents: torch.Tensor, rows: int, reference: bool) -> torch.Tensor:
    """``(rows, C, h, w)``: the one starting noise ``latents`` ``(1, C, h, w)`` for every row; with ``reference``,
    the last row fresh noise instead (seeded :data:`REFERENCE_SEED`), where the target draws its own picture."""
    import torch

    out = latents.expand(rows, *latents.shape[1:])  # (rows, C, h, w)
    if not reference:
        return out
    fresh = torch.randn(latents.shape[1:], generator=torch.Generator().manual_seed(REFERENCE_SEED))  # (C, h, w)
    return torch.cat([out[:-1], fresh.to(latents)[None]])  # (rows, C, h, w)


def pipe_arguments(pipe, pipe_kwargs: dict) -> dict:
    """The caller's pipeline arguments, checked; relation guidance set to 0 where the pipeline has it."""
    own = sorted(set(pipe_kwargs) & set(OWN_ARGUMENTS))
    if own:
        raise ValueError(f"edit sets {', '.join(own)} itself; pass the other pipeline arguments (steps, guidance, ...)")
    if "prompt_embeds" in pipe_kwargs:
        raise ValueError("edit needs the prompts' words to align their tokens; pass prompts, not prompt_embeds")
    from ..models.loading import takes_argument

    kwargs = dict(pipe_kwargs)
    takes_relation = takes_argument(pipe, "relation_guidance")
    relation = kwargs.get("relation_guidance", 0)
    if relation != 0:
        raise ValueError(
            f"relation_guidance={relation!r}; edits sample with relation guidance off (0): its gradient passes "
            "would move the target's layout away from the source's"
        )
    if takes_relation:
        kwargs["relation_guidance"] = 0
    return kwargs


def edit(
    pipe,
    source: str,
    target: str,
    settings: EditSettings | None = None,
    *,
    generator: torch.Generator | None = None,
    plain: bool = True,
    latents: torch.Tensor | None = None,
    source_path: list[torch.Tensor] | None = None,
    **kwargs,
) -> EditResult:
    """Sample ``source`` and ``target`` from one noise; the target with and without attention control.

    ``pipe``: any diffusers text-to-image pipeline whose ``unet`` is a ``UNet2DConditionModel``.
    ``settings``: an :class:`EditSettings`, or its fields as keywords (``cross_steps=0.5, blend=False``;
    the rest keep its defaults): ``cross_steps`` / ``self_steps``, fractions in [0, 1] of the first
    sampling steps in which the target takes the source's cross- / self-attention maps; ``reweight``,
    ``{word: factor}`` on the target's attention to its word; ``blend``, P2P's local blending
    (:mod:`crossattn.editing.local_blend`): outside where the changed words attend in the source, the
    target's latents are the source's after every step; ``shared_steps``, the first fraction of the steps
    in which the target follows the source's latents. Blending and shared steps are on by default because
    the default model's layout does not follow its attention maps alone (docs/benchmarks.md, "Attention control").
    ``generator``: one ``torch.Generator`` (a fresh one seeded from torch's global RNG when None).
    ``plain=False`` skips the uncontrolled target row (``.plain`` is None; two rows instead of three, so
    cheaper). A recolouring of a given image (``recolour``) samples one more row, last: the target from fresh
    noise, whose drawing of the changed words gives the new colour (:mod:`crossattn.editing.recolour`).
    ``latents``: one ``(1, C, h, w)`` starting noise for every row instead of the generator's (an inverted
    image: :func:`crossattn.edit_image`). ``source_path``: with ``latents``, the source row's
    latents after each step (the inversion path from ``latents`` down), put back during the first
    ``pinned_steps``. The other ``kwargs`` go to the pipeline (``num_inference_steps``, ``guidance_scale``,
    ``negative_prompt``, ...). Bad input is one ``ValueError``, raised before sampling.
    """
    from .colour_words import colour_edit
    from .control import Controller
    from .direct_inversion import given_image_callback

    settings = EditSettings.taken(settings, kwargs)
    if source_path:  # edit_image chose them already; a caller's own path: DDIM's, recoloured if a colour edit
        settings = settings.pinned_for(null_text=False, colour_edit=colour_edit(source, target))
    else:
        settings = settings.generated()
    kwargs = pipe_arguments(pipe, kwargs)
    reference = bool(source_path and settings.recolour)  # a recolouring's colour: the target from fresh noise
    extra = int(plain) + int(reference)
    controller = Controller(pipe, source, target, settings, extra_rows=extra, source_path=source_path)
    prompts = [source, target] + [target] * extra
    generators = row_generators(generator, len(prompts))
    with controller:
        if controller.needs_step_callback:
            callback = controller.step_callback
            if source_path and (settings.direct_inversion or settings.object_blend or settings.recolour):
                callback = given_image_callback(controller)  # direct_inversion.py: what a given image adds
            kwargs.update(callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["latents"])
        if latents is not None:
            kwargs["latents"] = row_latents(latents, len(prompts), reference)  # (rows, C, h, w)
        images = pipe(prompts, generator=generators, output_type="pil", **kwargs).images
    plain_image = images[2] if plain else None
    changed = controller.token_maps[0].changed
    return EditResult(images[0], plain_image, images[1], source, target, settings, changed)
