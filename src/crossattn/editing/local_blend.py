"""Local blending (prompt-to-prompt's ``LocalBlend``): keep the target's latents equal to the source's
outside the region its changed words attend to.

Hertz et al. (ICLR 2023, the reference code's ``LocalBlend``): after each sampling step,
``x_t ← x_s + m ⊙ (x_t − x_s)``, with ``m`` the union of where the changed words attend in the source
and in the target: their cross-attention maps at the highest cross-attention resolution, summed
over layers and the steps so far, max-pooled over a 3×3 neighbourhood, scaled to a maximum of 1 and
thresholded (0.3), then resized to the latents. Blending starts after the first ``start`` of the
steps, when the maps have settled. Everything outside the edited object then stays the source's, pixel for pixel.

One step more than the reference code: of the region's connected parts, only those whose peak reaches
``peak_ratio`` of the map's peak are kept. A colour word of a two-object prompt also attends, more weakly,
to the other object (the default model's text encoder is causal: "purple" in "a purple circle above a
purple square" has not yet seen which object it belongs to), and a 0.3 cut keeps that object in the
region, so the target may repaint it; a weaker separate part is dropped.

Why it is needed on the default model: its text encoder puts the prompt's content into every
token's value vector, so the target keeps drawing where its own noise response puts the object even
with every attention map taken from the source (measured: the layout shift is the same with
``cross_steps = self_steps = 1`` as without control).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: A part of the blend region is kept when its peak reaches this fraction of the map's peak (measured on
#: the two-object Pillow edits of ``benchmarks/given_image_edit.py``; docs/benchmarks.md).
PEAK_RATIO = 0.9


def connected_parts(region: torch.Tensor) -> torch.Tensor:
    """Labels of the 8-connected parts of a boolean ``(R, 1, h, w)`` region: ``(R, 1, h, w)`` long, 0
    outside, each part the largest flat index (+ 1) among its cells (grown by 3×3 max-pooling)."""
    h, w = region.shape[-2:]
    labels = torch.arange(1, h * w + 1, device=region.device, dtype=torch.float32).view(1, 1, h, w) * region
    while True:  # at most one pass per cell of the longest part
        grown = F.max_pool2d(labels, kernel_size=3, stride=1, padding=1) * region  # (R, 1, h, w)
        if torch.equal(grown, labels):
            return labels.long()
        labels = grown


def strong_parts(values: torch.Tensor, region: torch.Tensor, floor: torch.Tensor) -> torch.Tensor:
    """``region`` ``(R, 1, h, w)`` less its connected parts whose peak of ``values`` is below ``floor``
    ``(R, 1, 1, 1)``."""
    labels = connected_parts(region).flatten(1)  # (R, h*w)
    flat = values.flatten(1)  # (R, h*w)
    peaks = flat.new_zeros(flat.shape[0], flat.shape[1] + 1)  # (R, parts + 1): index 0 is outside
    peaks = peaks.scatter_reduce(1, labels, flat, reduce="amax")  # each part's peak
    kept = peaks.gather(1, labels) >= floor.flatten(1)  # (R, h*w)
    return region & kept.view_as(region)


class LocalBlend:
    """Collects the changed words' maps (via :meth:`add`) and blends the latents (a ``callback_on_step_end``)."""

    def __init__(
        self,
        source_tokens: list[int],
        target_tokens: list[list[int]],
        threshold: float = 0.3,
        start: float = 0.0,
        union: bool = False,
        peak_ratio: float = PEAK_RATIO,
        reference: bool = False,
    ):
        self.source_tokens, self.target_tokens = source_tokens, target_tokens
        self.threshold, self.start, self.union, self.peak_ratio = threshold, start, union, peak_ratio
        self.reference = reference  # also sum the first target's words in a reference row (a recolouring's)
        self.resolution: int | None = None  # the cross layers whose maps are summed (the highest resolution)
        self.maps: torch.Tensor | None = None  # (1 + targets [+ reference], h*w) running sum over layers and steps

    def reset(self, resolution: int) -> None:
        self.resolution, self.maps = resolution, None

    def add(
        self, layer_resolution: int, rows: torch.Tensor, first: int, with_targets: bool = True, reference_row: int = -1
    ) -> None:
        """Add one cross layer's maps of the changed words; ``rows``: ``(B, h, N, K)`` probabilities,
        ``first``: the source row of the conditional half. ``with_targets=False`` (a shared step, where the
        targets are the source): the source's maps only, zeros for the targets'. With ``reference``, a last row:
        the first target's words in row ``reference_row`` (uncontrolled, so in the batch at every step)."""
        if layer_resolution != self.resolution:
            return
        n = rows.shape[2]
        words = [self.source_tokens, *self.target_tokens]
        present = words if with_targets else words[:1]
        maps = [rows[first + i, :, :, tokens].sum(-1).mean(0) for i, tokens in enumerate(present)]  # R × (N,)
        maps += [rows.new_zeros(n)] * (len(words) - len(present))  # absent targets are 0
        if self.reference:
            maps.append(rows[reference_row, :, :, self.target_tokens[0]].sum(-1).mean(0))
        maps = torch.stack(maps).float()  # (R, h*w)
        self.maps = maps if self.maps is None else self.maps + maps

    def grid(self, size: tuple[int, int]) -> torch.Tensor:
        """The summed maps on the layer's ``h × w`` grid, ``(R, 1, h, w)``; the grid has the aspect of the
        latents' ``size`` (non-square sizes too)."""
        rows, n = self.maps.shape
        factor = math.sqrt(size[0] * size[1] / n)  # how many latent pixels a position spans, per side
        return self.maps.view(rows, 1, round(size[0] / factor), round(size[1] / factor))

    def regions(self, size: tuple[int, int]) -> torch.Tensor:
        """``(R, 1, H, W)`` bool: each row's region of its words (P2P's: pooled, cut at ``threshold`` of its peak,
        the parts that reach ``peak_ratio`` of it kept), at the latents' ``size``."""
        pooled = F.max_pool2d(self.grid(size), kernel_size=3, stride=1, padding=1)  # (R, 1, h, w)
        top = pooled.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)  # (R, 1, 1, 1)
        region = strong_parts(pooled, pooled / top > self.threshold, self.peak_ratio * top)  # (R, 1, h, w)
        return F.interpolate(region.float(), size=size, mode="nearest") > 0  # (R, 1, H, W)

    def upsampled(self, size: tuple[int, int]) -> torch.Tensor:
        """``(R, H, W)``: the summed maps at the latents' ``size`` (each position's value over the pixels it spans)."""
        return F.interpolate(self.grid(size), size=size, mode="nearest")[:, 0]

    def mask(self, size: tuple[int, int]) -> torch.Tensor:
        """``(targets, 1, H, W)`` blend masks: source ∪ target region of the changed words."""
        region = self.regions(size)[: 1 + len(self.target_tokens)]  # (1 + targets, 1, H, W)
        if self.union:
            return (region[:1] | region[1:]).float()  # (targets, 1, H, W)
        return region[:1].float().expand(len(self.target_tokens), -1, -1, -1)  # the source's region only

    def blend(self, latents: torch.Tensor, step: int, steps: int) -> torch.Tensor:
        """The latents ``(B, C, H, W)`` with each target row blended towards the source row (row 0)."""
        if self.maps is None or step < math.floor(self.start * steps + 1e-9):
            return latents
        targets = len(self.target_tokens)
        mask = self.mask(latents.shape[-2:]).to(latents)  # (targets, 1, H, W)
        source = latents[:1]  # (1, C, H, W)
        out = latents.clone()
        out[1 : 1 + targets] = source + mask * (latents[1 : 1 + targets] - source)
        return out


#: a given image's pixel is part of an object when it is at least this fraction of the region's largest
#: distance from the paper (the median outside the region) away from it
OBJECT_CONTRAST = 0.5


def object_region(region: torch.Tensor, image: torch.Tensor, grow: int = 1) -> torch.Tensor:
    """The object the blend ``region`` ``(H, W)`` bool points at, at the given ``image``'s own resolution
    ``(C, H, W)`` (model space: pixels, or a VAE's latents): the union of :func:`object_parts`, grown by
    ``grow`` pixels (an anti-aliased rim takes the new colour too). The word's map says which object (at its
    16×16 or coarser grid, a few pixels off on a 32×32 drawing); the image says its outline. The region
    itself when nothing in it stands out."""
    parts = object_parts(region, image)  # (P, H, W)
    if not len(parts):
        return region
    return grown(parts.any(dim=0), grow)


def object_parts(region: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """``(P, H, W)`` bool, one plane per object the ``region`` ``(H, W)`` points at in ``image`` ``(C, H,
    W)``: the connected parts of the pixels that stand out from the paper (``OBJECT_CONTRAST``; the paper is
    the image's median outside the region) lying at least half inside the region. ``(0, H, W)`` when none
    does (or the region is empty or everything)."""
    none = region.new_zeros((0, *region.shape))
    outside = ~region
    if not bool(outside.any()) or not bool(region.any()):
        return none
    distance = paper_distance(region, image)  # (H, W)
    top = distance[region].max()
    standing = distance >= OBJECT_CONTRAST * top  # (H, W)
    labels = connected_parts(standing[None, None])[0, 0]  # (H, W): 0 outside
    chosen = [p for p in labels[standing].unique() if (region & (labels == p)).sum() * 2 >= (labels == p).sum()]
    return torch.stack([(labels == p) & standing for p in chosen]) if chosen else none


def paper_colour(region: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """``(C,)``: the paper, the image's median outside ``region``."""
    return image[:, ~region].median(dim=1).values


def paper_distance(region: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """``(H, W)``: each pixel's distance from the paper (:func:`paper_colour`)."""
    return (image - paper_colour(region, image)[:, None, None]).norm(dim=0)  # (H, W)


def grown(mask: torch.Tensor, by: int) -> torch.Tensor:
    """The boolean ``(H, W)`` ``mask`` grown by ``by`` pixels (a max-pool over (2 by + 1)-pixel squares)."""
    pooled = F.max_pool2d(mask[None, None].float(), kernel_size=2 * by + 1, stride=1, padding=by)
    return pooled[0, 0] > 0  # (H, W)


def object_matte(region: torch.Tensor, image: torch.Tensor, parts: torch.Tensor | None = None) -> torch.Tensor:
    """How much of each pixel of ``image`` ``(C, H, W)`` is the object the blend ``region`` ``(H, W)`` points
    at: ``(H, W)`` in [0, 1], 0 outside :func:`object_region`, inside it the pixel's distance from the paper
    over the object's median distance (clipped at 1): 1 over the object's fill and outline, a fraction on an
    anti-aliased rim, as a matte ``pixel = paper + alpha * (object - paper)`` reads it. ``parts``: the
    region's :func:`object_parts`, when the caller has them already."""
    parts = object_parts(region, image) if parts is None else parts  # (P, H, W)
    if not len(parts):  # nothing in the region stands out from the paper: the region itself
        return region.float()
    core = parts.any(dim=0)  # the object's own pixels, no rim
    if torch.equal(core, region):  # the object fills the region exactly: all of it, and its rim
        return grown(core, 1).float()
    distance = paper_distance(region, image)  # (H, W)
    scale = distance[core].median().clamp_min(1e-6)
    return (distance / scale).clamp(0, 1) * grown(core, 1)  # (H, W): the object grown by its rim


def shaded_matte(region: torch.Tensor, image: torch.Tensor, parts: torch.Tensor | None = None) -> torch.Tensor:
    """How much of its object's own colour each pixel of a pixel-space ``image`` ``(3, H, W)`` in [-1, 1]
    carries, one plane per object the ``region`` points at (:func:`object_parts`), ``(P, H, W)``: the ``u`` of
    ``pixel = paper + u * fill - v * paper`` (least squares per pixel; ``fill`` the median colour of the
    object's interior, two pixels in from its edge, ``paper`` the image's median outside ``region``, both in
    [0, 1]). A pixel is the paper covered by ``v`` of a surface whose colour is the fill times a shade ``u /
    v`` (the reflectance times shading split of intrinsic images): 1 on the fill, the shade on a darker
    outline (0.55 for an outline drawn at 55 % of the fill, 0 for a black one), a fraction on an anti-aliased
    rim. A recolouring then changes the fill's colour and keeps each pixel's shade: ``pixel + u * (new fill -
    fill)``. Each plane is zero off its object grown by one pixel (and off :func:`object_matte`); it is that
    matte where the fill and the paper are nearly parallel (a grey object on white), which leaves ``u``
    undetermined. ``(1, H, W)``, :func:`object_matte`, when nothing in the region stands out. ``parts``: the
    objects to shade, when the caller chose them among the region's :func:`object_parts`."""
    parts = object_parts(region, image) if parts is None else parts  # (P, H, W)
    matte = object_matte(region, image, parts)  # (H, W)
    if not len(parts):
        return matte[None]
    pixels = (image + 1) / 2  # (3, H, W) in [0, 1]: black is 0, so a shade is a scale of the fill
    paper = (paper_colour(region, image) + 1) / 2  # (3,)
    planes = [part_shade(pixels, paper, part, grown(part, 1) * matte) for part in parts]
    return torch.stack(planes)  # (P, H, W)


def fill_colour(image: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
    """``(C,)``: the median of ``image`` ``(C, H, W)`` over the object ``part`` ``(H, W)`` two pixels in (its
    fill, clear of an outline and an anti-aliased rim), or over all of it when it is thinner than that."""
    interior = part & ~grown(~part, 2)  # (H, W)
    return image[:, interior if bool(interior.any()) else part].median(dim=1).values


def part_shade(pixels: torch.Tensor, paper: torch.Tensor, part: torch.Tensor, matte: torch.Tensor) -> torch.Tensor:
    """:func:`shaded_matte`'s plane for one object ``part`` ``(H, W)`` of ``pixels`` ``(3, H, W)`` in [0,
    1] on ``paper`` ``(3,)``; ``matte`` ``(H, W)``, its object matte (the plane's support and fallback)."""
    fill = fill_colour(pixels, part)  # (3,)
    basis = torch.stack([fill, -paper], dim=1)  # (3, 2): the columns u and v multiply
    gram = basis.T @ basis  # (2, 2)
    if float(torch.linalg.det(gram)) < 1e-3 * float(gram.trace()) ** 2:
        return matte
    offsets = (pixels - paper[:, None, None]).reshape(3, -1)  # (3, H*W)
    coefficients = torch.linalg.solve(gram, basis.T @ offsets)  # (2, H*W): u and v per pixel
    return coefficients[0].reshape(matte.shape).clamp(0, 1.5) * (matte > 0)  # (H, W): u
