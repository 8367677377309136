"""Drawings unlike the training data, with exact masks: the set that ``edit_geometry.py`` edits (issue 41).

The training scenes (``crossattn.data.shapes``) are upright filled shapes of two size ranges on pure
white, anti-aliased at 4× and drawn at 32×32. A user's drawing is none of that by definition, so this
renderer is its own (Pillow's ``ImageDraw``, not the scenes module) and varies, per style:

- shapes turned (squares and triangles at any angle) or upright, filled or with a darker outline;
- sizes outside the training ranges (smaller and larger) and off-centre places;
- edges anti-aliased (drawn at 4× the canvas, box-filtered down: supersampling) or hard (drawn at the
  canvas size, no smoothing);
- backgrounds white, light grey, or faintly textured (noise and faint stripes);
- the canvas 32×32 (the model's size), or 48×48 / 64×64, which the model reads resized to 32×32
  (``resize_center_crop``, bicubic, as ``crossattn edit --image`` fits a given image);
- fills near the palette colours, not on them (jittered by a few levels per channel).

Colour and shape words are the shipped model's (``captions.COLOURS``, ``captions.SHAPES``); a two-object
caption says the relation the places show (left of / right of / above / below). Each object's mask is
exact at 32×32: the object drawn alone on the same canvas with the same edges, resized as the image is,
covered at least half (the scenes module's mask rule).

    python benchmarks/drawings.py --out outputs/drawings_sheet.png   # a contact sheet: every style, masks beside
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from crossattn.data.captions import COLOURS, SHAPES, format_caption
from crossattn.data.folder import resize_center_crop
from crossattn.files import atomic_write

MODEL_SIZE = 32
SUPERSAMPLE = 4  # sub-samples per pixel side of an anti-aliased style
JITTER = 12  # fill colours are the palette's ± this many levels per channel
OUTLINE_SHADE = 0.55  # an outline is the fill darkened to this fraction
GAP = 0.06  # fraction of the side between two objects' bounding circles


@dataclass(frozen=True)
class DrawingStyle:
    """How one family of drawings is made. ``canvas``: the side drawn at (the model reads it resized to 32);
    ``supersample``: 1 for hard edges, else sub-samples per pixel side; ``radius``: the objects' bounding
    radius range as a fraction of the side; ``outline``: the outline's width range at the canvas size
    ((0, 0): filled only); ``background``: ``white``, ``grey`` or ``texture``; ``turned``: squares and
    triangles at a random angle; ``offcentre``: one object kept ≥ 0.22 of the side from the middle."""

    name: str
    canvas: int
    supersample: int
    radius: tuple[float, float]
    outline: tuple[int, int] = (0, 0)
    background: str = "white"
    turned: bool = True
    offcentre: bool = False


STYLES = (
    DrawingStyle("turned-aa-32", 32, SUPERSAMPLE, (0.13, 0.19)),
    DrawingStyle("outlined-hard-64", 64, 1, (0.14, 0.20), outline=(2, 4)),
    DrawingStyle("small-offcentre-hard-32", 32, 1, (0.10, 0.13), turned=False, offcentre=True),
    DrawingStyle("large-grey-aa-48", 48, SUPERSAMPLE, (0.19, 0.25), background="grey", turned=False),
    DrawingStyle("texture-outlined-aa-64", 64, SUPERSAMPLE, (0.12, 0.17), outline=(2, 3), background="texture"),
)
STYLE_NAMES = tuple(s.name for s in STYLES)


@dataclass
class DrawnObject:
    """One object: its words, its fill and outline (RGB), centre (x, y) and bounding radius as fractions of
    the side, angle (degrees), outline width at the canvas (0: none)."""

    colour: str
    shape: str
    fill: tuple[int, int, int]
    outline: tuple[int, int, int]
    centre: tuple[float, float]
    radius: float
    angle: float
    width: int


@dataclass
class Drawing:
    """A drawing at its canvas size, what it shows, and each object's exact mask at the model's 32×32."""

    image: Image.Image  # RGB, canvas × canvas
    style: str
    caption: str
    objects: list[DrawnObject]
    masks: list[np.ndarray]  # (32, 32) bool per object, in the order of ``objects``
    relation: str | None = None
    background: tuple[float, float, float] = (255.0, 255.0, 255.0)  # its mean colour

    @property
    def words(self) -> list[tuple[str, str]]:
        return [(o.colour, o.shape) for o in self.objects]


def polygon(obj: DrawnObject, side: float) -> list[tuple[float, float]] | None:
    """The outline points of a square or triangle at ``side`` pixels a side (None for a circle); the shape's
    bounding circle has radius ``obj.radius × side`` and it is turned by ``obj.angle`` about its centre."""
    if obj.shape == "circle":
        return None
    corners = 4 if obj.shape == "square" else 3
    start = 45.0 if obj.shape == "square" else -90.0  # square axis-aligned, triangle apex up, at angle 0
    cx, cy, r = obj.centre[0] * side, obj.centre[1] * side, obj.radius * side
    turn = [math.radians(start + obj.angle + k * 360.0 / corners) for k in range(corners)]
    return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in turn]


def draw_object(draw: ImageDraw.ImageDraw, obj: DrawnObject, side: float, fill, outline, width: int) -> None:
    """One object onto ``draw`` at ``side`` pixels a side (its bounding circle as ``polygon`` says)."""
    points = polygon(obj, side)
    if points is None:
        cx, cy, r = obj.centre[0] * side, obj.centre[1] * side, obj.radius * side
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=outline, width=width)
    else:
        draw.polygon(points, fill=fill, outline=outline, width=width)


def background(style: DrawingStyle, rng: np.random.Generator) -> np.ndarray:
    """The paper at the canvas size, ``(canvas, canvas, 3)`` float: white, a light grey, or a faint texture
    (a light warm paper with ±3 levels of noise and faint diagonal stripes of ±4)."""
    n = style.canvas
    if style.background == "white":
        return np.full((n, n, 3), 255.0)
    if style.background == "grey":
        return np.full((n, n, 3), float(rng.integers(222, 238)))
    y, x = np.mgrid[0:n, 0:n]
    stripes = 4.0 * np.sin((x + y) * 2 * math.pi / rng.uniform(6, 11))[..., None]  # (n, n, 1)
    paper = np.array([247.0, 244.0, 238.0]) + stripes + rng.normal(0, 3.0, (n, n, 1))  # (n, n, 3)
    return np.clip(paper, 0, 255)


def coverage(style: DrawingStyle, obj: DrawnObject) -> np.ndarray:
    """The object's coverage at the canvas, ``(canvas, canvas)`` in [0, 1]: drawn at ``supersample`` × the
    canvas and box-filtered down (1: hard edges, 0 or 1)."""
    big = style.canvas * style.supersample
    alone = Image.new("L", (big, big), 0)
    draw_object(ImageDraw.Draw(alone), obj, big, 255, 255, obj.width * style.supersample)
    return np.asarray(alone.resize((style.canvas, style.canvas), Image.BOX), np.float32) / 255.0


def paint(style: DrawingStyle, obj: DrawnObject) -> tuple[np.ndarray, np.ndarray]:
    """The object's colours and coverage at the canvas: ``((canvas, canvas, 3), (canvas, canvas))``; the
    outline (if any) is where the whole shape covers and its inside (drawn without outline) does not."""
    whole = coverage(style, obj)
    if not obj.width:
        return np.broadcast_to(np.array(obj.fill, np.float32), (*whole.shape, 3)), whole
    big = style.canvas * style.supersample
    inner = Image.new("L", (big, big), 0)  # the fill only: the shape shrunk by the outline's width
    draw_object(ImageDraw.Draw(inner), obj, big, 255, 0, obj.width * style.supersample)
    inside = np.asarray(inner.resize((style.canvas, style.canvas), Image.BOX), np.float32)[..., None] / 255.0
    share = np.where(whole[..., None] > 0, inside / np.maximum(whole[..., None], 1e-6), 0).clip(0, 1)  # (n, n, 1)
    colours = share * np.array(obj.fill, np.float32) + (1 - share) * np.array(obj.outline, np.float32)
    return colours, whole


def model_mask(style: DrawingStyle, obj: DrawnObject) -> np.ndarray:
    """The object's mask at 32×32: its coverage, resized as the model resizes the drawing, ≥ 0.5."""
    alone = Image.fromarray((coverage(style, obj) * 255).round().astype(np.uint8))
    if style.canvas != MODEL_SIZE:
        alone = resize_center_crop(alone, MODEL_SIZE)
    return np.asarray(alone) >= 128


def jittered(colour: str, rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-JITTER, JITTER + 1), 0, 255)) for c in COLOURS[colour])


def place(style: DrawingStyle, radii: list[float], rng: np.random.Generator) -> list[tuple[float, float]]:
    """Centres (fractions of the side) that keep every object inside the canvas (a margin of 0.04) and two
    objects apart by ``GAP``; with ``offcentre`` the first is ≥ 0.22 from the middle."""
    for _ in range(10_000):
        centres = [tuple(rng.uniform(r + 0.04, 1 - r - 0.04, 2)) for r in radii]
        if style.offcentre and math.dist(centres[0], (0.5, 0.5)) < 0.22:
            continue
        if len(centres) == 2 and math.dist(*centres) < radii[0] + radii[1] + GAP:
            continue
        return centres
    raise RuntimeError(f"no room for objects of radii {radii} in style {style.name}")


def relation_of(centres: list[tuple[float, float]]) -> str:
    """The relation of the first object to the second that their places show most clearly."""
    dx, dy = centres[0][0] - centres[1][0], centres[0][1] - centres[1][1]
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


def pick_objects(style: DrawingStyle, count: int, rng: np.random.Generator) -> list[DrawnObject]:
    """``count`` objects of distinct colours, placed and sized for ``style``."""
    colours = rng.choice(list(COLOURS), size=count, replace=False)
    radii = [float(rng.uniform(*style.radius)) for _ in range(count)]
    if count == 2:
        radii = [r * 0.85 for r in radii]  # two must fit apart
    objects = []
    for colour, radius, centre in zip(colours, radii, place(style, radii, rng), strict=True):
        shape = str(rng.choice(SHAPES))
        fill = jittered(str(colour), rng)
        width = int(rng.integers(style.outline[0], style.outline[1] + 1))
        angle = float(rng.uniform(8, 82)) if style.turned and shape != "circle" else 0.0
        outline = tuple(int(c * OUTLINE_SHADE) for c in fill)
        objects.append(DrawnObject(str(colour), shape, fill, outline, centre, radius, angle, width))
    return objects


def draw(style: DrawingStyle, count: int, rng: np.random.Generator) -> Drawing:
    """One drawing of ``count`` (1 or 2) objects in ``style``, its caption and exact 32×32 masks."""
    objects = pick_objects(style, count, rng)
    paper = background(style, rng)
    canvas = paper.copy()  # (n, n, 3)
    for obj in objects:
        colours, cover = paint(style, obj)
        canvas = cover[..., None] * colours + (1 - cover[..., None]) * canvas
    image = Image.fromarray(canvas.round().clip(0, 255).astype(np.uint8))
    relation = relation_of([o.centre for o in objects]) if count == 2 else None
    caption = format_caption([(o.colour, o.shape) for o in objects], relation=relation)
    masks = [model_mask(style, o) for o in objects]
    return Drawing(image, style.name, caption, objects, masks, relation, tuple(paper.mean(axis=(0, 1))))


def drawing_set(n: int, seed: int = 0) -> list[Drawing]:
    """``n`` drawings, the styles in turn and, within each, one and two objects in turn; drawing ``i`` is
    drawn from ``default_rng([seed, i])``, so the set is reproducible and a prefix of a larger one."""
    out = []
    for i in range(n):
        style = STYLES[i % len(STYLES)]
        out.append(draw(style, 1 + (i // len(STYLES)) % 2, np.random.default_rng([seed, i])))
    return out


def at_model_size(drawing: Drawing) -> Image.Image:
    """The drawing as the model reads it: 32×32 (resized as ``crossattn edit --image`` does)."""
    image = drawing.image
    return image if image.width == MODEL_SIZE else resize_center_crop(image, MODEL_SIZE)


def contact_sheet(drawings: list[Drawing], zoom: int = 4) -> Image.Image:
    """Each drawing at 32×32 (as the model reads it) beside its masks, ``zoom`` × enlarged, one per cell."""
    cell = MODEL_SIZE * zoom
    columns = 2 * len(STYLES)
    rows = math.ceil(len(drawings) / len(STYLES))
    sheet = Image.new("RGB", (columns * cell, rows * cell), (90, 90, 90))
    for i, drawing in enumerate(drawings):
        row, col = divmod(i, len(STYLES))
        sheet.paste(at_model_size(drawing).resize((cell, cell), Image.NEAREST), (2 * col * cell, row * cell))
        masks = np.zeros((MODEL_SIZE, MODEL_SIZE, 3), np.uint8)
        for k, mask in enumerate(drawing.masks):
            masks[mask] = (255, 255, 255) if k == 0 else (255, 160, 0)  # edited-first object white, other orange
        sheet.paste(Image.fromarray(masks).resize((cell, cell), Image.NEAREST), ((2 * col + 1) * cell, row * cell))
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30, help="drawings on the sheet (the styles in turn)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="outputs/drawings_sheet.png")
    args = parser.parse_args()
    drawings = drawing_set(args.n, args.seed)
    sheet = contact_sheet(drawings)
    atomic_write(args.out, lambda path: sheet.save(path, format="PNG"))
    for d in drawings:
        print(f"{d.style:26s} {d.image.width}x{d.image.height}  {d.caption}")


if __name__ == "__main__":
    main()
