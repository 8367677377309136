"""A colour edit of a given image as a recolouring: the given object's outline and shading, the model's colour.

``recolour=True`` (:class:`~crossattn.editing.settings.EditSettings`; on by default for a colour edit of a
given image; issue 41). The controlled target of a prompt-to-prompt edit redraws the edited object in the
model's own style: a turned triangle comes back upright, an outline of the old colour's shade stays at its
rim. Bringing each of its steps to the nearest recolouring of the given object (one least-squares colour
shift over the object) kept the outline, but on 19 of issue 41's 100 drawings the controlled target never
takes the new colour: the model would draw the object elsewhere (large objects on grey, turned ones), so
inside the given object it paints the paper, and the nearest recolouring is a pale copy of the object. The
model does draw the new colour when it draws the target prompt freely; from the given image's inverted noise
(the edit's plain row) it mostly does too, but there the old colour lingers in the noise, and on two of the
first 58 drawings it drew a faint ring or scattered dots of the old colour (looked at: docs/benchmarks.md).

So the edit samples one more row, the *reference*: the target prompt from fresh noise (seed 0, the same
every run), the model's own drawing of it. The edited image is the source row (the reconstruction) with the
object where the changed words' map peaks recoloured: ``x_s + alpha * (c_new - c_old)``, ``alpha`` the
object's shading in the given image (:func:`~crossattn.editing.local_blend.shaded_matte`: 1 on the fill, the
outline's shade on a darker outline, a fraction on an anti-aliased rim; on a VAE's latents, where a shade is
not a scale of the fill, its matte, :func:`~crossattn.editing.local_blend.object_matte`), ``c_old`` the
object's fill in the given image and ``c_new`` the fill of the object in the reference row where the
target's changed words' map peaks (both :func:`~crossattn.editing.local_blend.fill_colour`). That is the
intrinsic-image split of a pixel into reflectance and shading (Barrow and Tenenbaum, "Recovering intrinsic
scene characteristics from images", 1978) with the reflectance swapped. The model chooses the colour (its
own drawing of the words); the given image keeps everything else. For edits of a colour, not of a shape: a
shape word's reference object has a shape of its own, which the recolouring does not take.
"""

from __future__ import annotations

import torch

from .local_blend import fill_colour, object_matte, object_parts, shaded_matte

#: objects whose fill is this much farther (model space, [-1, 1] RGB) from the named colour than the nearest
#: one's still count as that colour (two objects of one colour: the words' map then chooses)
NAMED_MARGIN = 0.25


def strongest_object(
    region: torch.Tensor, image: torch.Tensor, weight: torch.Tensor, named: torch.Tensor | None = None
) -> torch.Tensor | None:
    """The object (``(H, W)`` bool) among the ``region``'s :func:`~crossattn.editing.local_blend.object_parts`
    of ``image`` ``(C, H, W)`` where the words' map ``weight`` ``(H, W)`` peaks (as the local blend keeps the
    region's parts by their peaks: a sum would favour a large object at the region's edge); with ``named``
    (``(3,)``, the colour the words name, in a pixel-space image), among the objects whose fill is nearest it
    (within :data:`NAMED_MARGIN`). None when the region points at no object.

    Why the name: the default model's text encoder is causal, so in "a blue triangle below an orange square"
    the word "orange" has seen "a blue triangle" and its map can peak on the triangle (issue 41's drawing 88,
    and a Pillow pair whose other object was recoloured instead); the drawing's own colours say which object
    is orange."""
    parts = object_parts(region, image)  # (P, H, W)
    if not len(parts):
        return None
    peaks = torch.where(parts, weight, torch.zeros_like(weight)).amax(dim=(1, 2))  # (P,)
    if named is not None:
        distance = torch.stack([(fill_colour(image, part) - named).norm() for part in parts])  # (P,)
        peaks = torch.where(distance <= distance.min() + NAMED_MARGIN, peaks, torch.full_like(peaks, -1.0))
    return parts[int(peaks.argmax())]


def named_colour(controller, pixels: bool) -> torch.Tensor | None:
    """``(3,)`` in model space: the colour the source's first changed words name (matplotlib's), in a
    pixel-space model; None on a VAE's latents or when they name no colour."""
    from .colour_words import colour_rgb

    rgb = colour_rgb(controller.token_maps[0].changed[0][0]) if pixels and controller.token_maps[0].changed else None
    return None if rgb is None else torch.tensor(rgb) * 2 - 1


def recoloured(controller, latents: torch.Tensor, pixels: bool) -> torch.Tensor:
    """``latents`` ``(B, C, H, W)`` after the edit's last step (rows ``[source, *targets, ..., reference]``) with
    every target row the source row recoloured (the module's docstring); the rows as they were when the
    source's words or the reference row's point at no object."""
    blend = controller.local_blend
    size = latents.shape[-2:]
    regions, weights = blend.regions(size)[:, 0], blend.upsampled(size)  # (R, H, W) each; the reference last
    image = controller.source_path[-1].to(latents).reshape(latents.shape[1:])  # (C, H, W): the given image
    targets = len(controller.token_maps)
    reference = latents[-1]  # (C, H, W): the target prompt drawn from fresh noise
    old = strongest_object(regions[0], image, weights[0], named_colour(controller, pixels))
    new = strongest_object(regions[-1], reference, weights[-1])
    if old is None or new is None:
        return latents
    shift = fill_colour(reference, new) - fill_colour(image, old)  # (C,)
    matte = shaded_matte if pixels else object_matte
    alpha = matte(regions[0], image, old[None]).reshape(size)  # (H, W)
    out = latents.clone()
    out[1 : 1 + targets] = latents[0] + alpha * shift[:, None, None]  # (targets, C, H, W)
    return out
