"""Pictures for the page: the upscaled image, word overlays (mean, one step, one head), the
layer × word grid, a pixel's self-attention map and the words that pixel reads.

Overlays are ``viz.heat_frame`` (the colour map and blend of the CLI's GIF frames), each scaled to
its own maximum as everywhere in crossattn; the grid has the panels of the CLI's ``.grid.png``. Self- versus cross-attention: a pixel's self-attention row is a map over the image
(where it looks, O((HW)²) to compute); its cross-attention row is a distribution over the prompt's
tokens (what it reads, O(HW·T)).
"""

from __future__ import annotations

SCALE = 8  # 32×32 images are shown 256×256, nearest neighbour


def upscaled(image, scale: int = SCALE):
    """The image ``scale``× larger, nearest neighbour (pixels stay square)."""
    from PIL import Image

    return image.resize((image.width * scale, image.height * scale), Image.NEAREST)


def word_overlays(maps, image, step=None, head=None, layers=None) -> list[tuple[object, str]]:
    """``(overlay, caption)`` for every word of the prompt (mean over what is not chosen)."""
    from .. import viz

    panels = []
    for word in dict.fromkeys(maps.words_for(0)):
        heat = maps.word_map(word, layers=layers, step=step, head=head)  # (H, W)
        panels.append((viz.heat_frame(heat, image, scale=SCALE), f"{word} {float(heat.max()):.2f}"))
    return panels


def step_overlays(maps, image, step: int) -> list[tuple[object, str]]:
    """Every word at sampling step ``step`` (1-based; 0 = the mean over all steps)."""
    if not 0 <= step <= maps.num_steps:
        raise ValueError(f"step {step} is out of range; steps go from 1 to {maps.num_steps} (0 = mean)")
    panels = word_overlays(maps, image, step=step - 1 if step else None)
    label = f"s{step}" if step else "mean"
    return [(frame, f"{caption} ({label})") for frame, caption in panels]


def head_overlays(maps, image, layer: str) -> list[tuple[object, str]]:
    """One layer's heads × words (bertviz's head view, for cross-attention); mean over steps."""
    heads = maps.meta["layers"][layer]["heads"] if maps.meta["per_head"] else 0
    panels = []
    for head in range(heads):
        for frame, caption in word_overlays(maps, image, head=head, layers=layer):
            panels.append((frame, f"{caption} (h{head})"))
    return panels


def layer_grid(maps, image, tile: int = 4):
    """The layer × word grid (rows: cross-attention layers with their resolution; columns: words).

    The same panels as the CLI's ``.grid.png`` (``viz.layer_word_grid``), tiled with Pillow: a
    matplotlib figure of 7 × 7 axes takes ~2.5 s on a CPU, this ~0.1 s.
    """
    from PIL import Image, ImageDraw, ImageFont

    from .. import viz

    words = list(dict.fromkeys(maps.words_for(0)))
    names = maps.select(None, "cross")
    side = image.width * tile
    font = ImageFont.load_default(size=13)
    left, top = 110, 22
    grid = Image.new("RGB", (left + len(words) * (side + 4), top + len(names) * (side + 4)), "white")
    draw = ImageDraw.Draw(grid)
    for col, word in enumerate(words):
        draw.text((left + col * (side + 4) + 4, 4), word, fill="black", font=font)
    for row, name in enumerate(names):
        y = top + row * (side + 4)
        label = f"{viz._short(name)}\n{maps.meta['layers'][name]['resolution']}px"
        draw.multiline_text((4, y + side // 2 - 14), label, fill="black", font=font)
        for col, word in enumerate(words):
            heat = maps.word_map(word, layers=name)  # (H, W), this layer only
            grid.paste(viz.heat_frame(heat, image, scale=tile), (left + col * (side + 4), y))
    return grid


def to_pixel(index, image, scale: int = SCALE) -> tuple[int, int]:
    """A click at ``index`` = ``[x, y]`` on the upscaled image → the model image's pixel ``(x, y)``."""
    x, y = (int(v) // scale for v in index)
    if not (0 <= x < image.width and 0 <= y < image.height):
        raise ValueError(f"pixel ({x}, {y}) is outside the {image.width}x{image.height} image")
    return x, y


def pixel_panel(self_maps, image, x: int, y: int):
    """Where pixel (x, y) looks: its self-attention map over the image, the pixel marked with a cross."""
    from PIL import ImageDraw

    from .. import viz

    frame = viz.heat_frame(self_maps.pixel_map(x, y), image, scale=SCALE)
    draw = ImageDraw.Draw(frame)
    cx, cy, r = x * SCALE + SCALE // 2, y * SCALE + SCALE // 2, SCALE * 2
    for width, colour in ((5, "black"), (2, "white")):
        draw.line((cx - r, cy, cx + r, cy), fill=colour, width=width)
        draw.line((cx, cy - r, cx, cy + r), fill=colour, width=width)
    return frame


def pixel_words(cross_maps, x: int, y: int) -> dict[str, float]:
    """What pixel (x, y) reads: its cross-attention row, summed per word (mean over layers, steps, heads).

    The start token and the end/padding tokens take the rest of the probability, so the bars sum to 1.
    """
    row = {"<start>": float(cross_maps.token_map(0)[y, x])}
    for word in dict.fromkeys(cross_maps.words_for(0)):
        row[word] = float(cross_maps.word_map(word)[y, x])
    row["<end>/padding"] = max(0.0, 1.0 - sum(row.values()))
    return row
