"""Scene analyzer: find the objects in an RGB image of the scenes vocabulary.

Steps, each a small function: foreground = pixels far from white; 8-connected components (a
numpy labeller: min-label propagation with pointer jumping, no scipy); per component the colour
(the palette colour whose blend with white comes nearest the mean of its most saturated pixels), a soft coverage map ``alpha``
(how far each pixel is from white towards that colour, which undoes the anti-aliasing blend), the
mask (``alpha >= 0.5``, the scenes module's own mask rule), centroid (alpha-weighted), bounding
box, and the shape.

Shape is a template fit: for each shape, the template of the same area (from ``alpha``'s sum)
at the same centroid, tried at every rotation step within its symmetry, is compared with
``alpha`` (L1 error ÷ area); the smallest error wins. Trying rotations makes it
rotation-invariant; comparing whole coverage maps, not corners, keeps it robust to noise and to
blur that rounds off small triangles' corners. When the shapes asked for include ``ring`` (the
fine-tuning example's shape, outside the default three), a hole check decides ring or not: a
ring is an object whose mask encloses a background region of at least ``MIN_HOLE`` pixels around
its centroid (a ring's centre of mass lies in its hole); an object without one is given the best
of the other templates. Filled shapes have no hole, and neither do blobs or scribbles with specks
of paper in them away from their centroid, which a template fit alone could call rings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import numpy as np

from ..data.captions import BACKGROUND, COLOURS
from ..data.shapes import SHAPE_DRAWERS, SHAPES, coverage

FOREGROUND = 0.3  # a pixel is foreground when ≥ 30 % of the way from white to the nearest palette colour
CORE = 0.75  # colour is read from pixels ≥ 75 % as far from white as the component's farthest pixel
ANGLE_STEP = 5.0  # degrees between the rotations tried for a shape template
BLURS = (0.0, 0.5, 0.8, 1.1)  # Gaussian σ (pixels) tried on each template: soft edges stay the same shape
RIM = 2  # pixels around a component that may hold its anti-aliased or blurred edge
MASK_ALPHA = 0.49  # the scenes' mask rule is coverage ≥ 0.5; rounding to uint8 moves a half-covered pixel by < 0.01
MIN_BLEND = 0.5  # an object's core colour is read as its palette colour blended ≥ 50 % over white
MIN_HOLE = 3.0  # enclosed background pixels (at 32×32, scaled with the area) that make an object a ring
MIN_AREA = 4.0  # components smaller than this many pixels at 32×32 (scaled with the image area) are specks

PALETTE = np.array(list(COLOURS.values()), np.float32)  # (colours, 3)
WHITE = np.array(BACKGROUND, np.float32)


@dataclass
class DetectedObject:
    colour: str
    shape: str
    centroid: tuple[float, float]  # (x, y) pixels, alpha-weighted; pixel (i, j) has centre (j + .5, i + .5)
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 of the mask, end exclusive
    mask: np.ndarray  # (H, W) bool
    area: float  # soft area (sum of alpha), pixels
    colour_distance: float  # RGB distance from the core colour to the chosen colour's blend line with white
    shape_errors: dict[str, float] = field(default_factory=dict)  # shape → template L1 error ÷ area
    hole_area: int = 0  # background pixels enclosed by the mask around the centroid (centre_hole_area)

    def describe(self) -> str:
        return f"{self.colour} {self.shape} at ({self.centroid[0]:.1f}, {self.centroid[1]:.1f})"


def check_image(image: np.ndarray, resolution: int | None = None) -> np.ndarray:
    """The image as (H, W, 3) float32 0–255; a ``ValueError`` naming the accepted shape otherwise."""
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] != array.shape[1]:
        raise ValueError(f"image has shape {array.shape}; accepted: square (H, H, 3) RGB")
    if resolution is not None and array.shape[:2] != (resolution, resolution):
        raise ValueError(
            f"image is {array.shape[1]}x{array.shape[0]} but the model's resolution is {resolution}; "
            f"accepted: {resolution}x{resolution} RGB"
        )
    if array.dtype != np.uint8:
        raise ValueError(f"image dtype is {array.dtype}; accepted: uint8 (0–255)")
    return array.astype(np.float32)


def label_components(foreground: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected component labels (0 = background, 1..K) of a boolean (H, W) array, and K."""
    h, w = foreground.shape
    none = h * w  # label of background pixels, larger than every pixel index
    labels = np.where(foreground, np.arange(h * w).reshape(h, w), none)  # (H, W): a pixel index per pixel
    while True:
        padded = np.pad(labels, 1, constant_values=none)  # (H+2, W+2)
        neighbours = np.min([padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)], axis=0)
        new = np.where(foreground, neighbours, none)
        flat = np.append(new.ravel(), none)  # (H*W + 1,): index `none` maps to itself
        new = np.where(foreground, flat[new], none)  # pointer jumping: take the label's own label
        if np.array_equal(new, labels):
            break
        labels = new
    roots = np.unique(labels[foreground])
    relabel = np.zeros(h * w + 1, np.int64)
    relabel[roots] = np.arange(1, len(roots) + 1)
    return relabel[labels], len(roots)


def distance_from_white(image: np.ndarray) -> np.ndarray:
    return np.linalg.norm(WHITE - image, axis=-1)  # (H, W)


def nearest_colour(rgb: np.ndarray) -> tuple[str, float]:
    """The palette colour whose blend with white (at least half covered) comes nearest ``rgb``.

    A thin object under blur (a ring's band) never reaches its full colour, and a lightened blue
    is nearer purple than blue; its distance to the white→blue blend line stays small."""
    direction = WHITE - PALETTE  # (colours, 3)
    alpha = np.clip((direction @ (WHITE - rgb)) / (direction * direction).sum(axis=1), MIN_BLEND, 1.0)  # (colours,)
    distances = np.linalg.norm(WHITE - alpha[:, None] * direction - rgb, axis=1)  # (colours,)
    i = int(np.argmin(distances))
    return list(COLOURS)[i], float(distances[i])


def alpha_towards(image: np.ndarray, colour: str) -> np.ndarray:
    """Coverage implied by blending ``colour`` over white: projection of (white − pixel) on
    (white − colour), clipped to [0, 1]. (H, W) float32."""
    direction = WHITE - np.array(COLOURS[colour], np.float32)  # (3,)
    return np.clip((WHITE - image) @ direction / (direction @ direction), 0.0, 1.0)


def dilate(mask: np.ndarray, steps: int = 1) -> np.ndarray:
    """8-neighbour dilation by ``steps`` pixels."""
    h, w = mask.shape
    for _ in range(steps):
        padded = np.pad(mask, 1)
        mask = np.any([padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)], axis=0)
    return mask


@cache
def unit_area(shape: str) -> float:
    """Area of ``shape`` at size 1 (pixels²), sampled on a fine grid once; area grows with size²."""
    grid = (np.arange(400) + 0.5) / 100 - 2.0  # (400,) covering [-2, 2]
    inside = SHAPE_DRAWERS[shape].inside(grid[None, :], grid[:, None], 1.0)  # (400, 400)
    return float(inside.mean() * 16.0)


@cache
def blur_matrix(n: int, sigma: float) -> np.ndarray:
    """(n, n) matrix B with ``B @ X @ B.T`` a Gaussian blur of X (rows normalised: mass kept)."""
    x = np.arange(n)
    b = np.exp(-((x[:, None] - x[None, :]) ** 2) / (2 * sigma**2))
    return b / b.sum(axis=1, keepdims=True)


def fit_shape(alpha: np.ndarray, centroid: tuple[float, float], shapes: tuple[str, ...]) -> dict[str, float]:
    """For each shape, the smallest L1 error ÷ area between ``alpha`` and an equal-area template
    at ``centroid``, over the rotations its symmetry allows and the blur levels in BLURS."""
    area, n = float(alpha.sum()), alpha.shape[0]
    errors = {}
    for shape in shapes:
        size = np.sqrt(area / unit_area(shape))
        symmetry = SHAPE_DRAWERS[shape].symmetry
        angles = np.deg2rad(np.arange(0.0, symmetry, ANGLE_STEP)) if symmetry else [0.0]
        best = np.inf
        for angle in angles:
            template = coverage(shape, centroid, size, n, angle)  # (H, W)
            for sigma in BLURS:
                blurred = blur_matrix(n, sigma) @ template @ blur_matrix(n, sigma).T if sigma else template
                best = min(best, float(np.abs(alpha - blurred).sum()))
        errors[shape] = best / area
    return errors


def centre_hole_area(mask: np.ndarray, centroid: tuple[float, float]) -> int:
    """Pixels of the background region that holds the object's centroid, when ``mask`` encloses it
    (it cannot reach the image border through non-mask pixels, 8-connected, so a diagonal gap in
    the outline counts as open); 0 when the centroid is on the object or the region is open.
    A ring's centre of mass lies in its hole; a filled shape's, or a scribble's, on its ink."""
    x, y = int(centroid[0]), int(centroid[1])
    if not (0 <= y < mask.shape[0] and 0 <= x < mask.shape[1]) or mask[y, x]:
        return 0
    ys, xs = np.nonzero(mask)
    y0, x0 = ys.min(), xs.min()
    crop = np.pad(mask[y0 : ys.max() + 1, x0 : xs.max() + 1], 1)  # (h+2, w+2): open all round
    if not (0 <= y - y0 + 1 < crop.shape[0] - 1 and 0 <= x - x0 + 1 < crop.shape[1] - 1):
        return 0
    labels, _ = label_components(~crop)
    region = labels[y - y0 + 1, x - x0 + 1]
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    return 0 if region in border else int((labels == region).sum())


def choose_shape(errors: dict[str, float], hole_area: int, min_hole: float) -> str:
    """The best-fitting template's shape; but when ring is a candidate, the hole decides: a
    centred hole of at least ``min_hole`` pixels makes a ring, and without one it is not a ring."""
    if "ring" in errors:
        if hole_area >= min_hole:
            return "ring"
        errors = {k: v for k, v in errors.items() if k != "ring"}
    return min(errors, key=errors.get)


def describe_component(image: np.ndarray, region: np.ndarray, core: np.ndarray, shapes: tuple[str, ...]):
    """One :class:`DetectedObject` from the pixels ``region`` may cover, colour read from ``core``."""
    colour, colour_distance = nearest_colour(image[core].mean(axis=0))
    alpha = np.where(region, alpha_towards(image, colour), 0.0)  # (H, W)
    mask = alpha >= MASK_ALPHA
    if not mask.any():
        return None
    ys, xs = np.nonzero(mask)
    area = float(alpha.sum())
    grid_y, grid_x = np.indices(alpha.shape)
    centroid = (float((alpha * (grid_x + 0.5)).sum() / area), float((alpha * (grid_y + 0.5)).sum() / area))
    errors = fit_shape(alpha, centroid, shapes)
    bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    holes = centre_hole_area(mask, centroid)
    shape = choose_shape(errors, holes, MIN_HOLE * mask.size / 32**2)
    return DetectedObject(colour, shape, centroid, bbox, mask, area, colour_distance, errors, holes)


def analyze(image: np.ndarray, resolution: int | None = None, shapes: tuple[str, ...] = SHAPES) -> list[DetectedObject]:
    """The objects in ``image`` ((H, W, 3) uint8), largest first."""
    pixels = check_image(image, resolution)
    far = distance_from_white(pixels)  # (H, W)
    threshold = FOREGROUND * float(np.linalg.norm(WHITE - PALETTE, axis=1).min())
    labels, count = label_components(far > threshold)
    min_area = MIN_AREA * pixels.shape[0] * pixels.shape[1] / 32**2
    others = labels > 0
    found = []
    for k in range(1, count + 1):
        component = labels == k
        if component.sum() < min_area:
            continue
        region = dilate(component, RIM) & ~(others & ~component)  # the component and its anti-aliased rim
        core = component & (far >= CORE * far[component].max())
        obj = describe_component(pixels, region, core, shapes)
        if obj is not None and obj.area >= min_area:
            found.append(obj)
    return sorted(found, key=lambda o: -o.area)
