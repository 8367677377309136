"""Pictures for the page: the upscaled image, word overlays (mean, one step, one head), the
layer × word grid, a pixel's self-attention map and the words that pixel reads.

Overlays are ``viz.heat_frame`` (the colour map and blend of the CLI's GIF frames), each scaled to
its own maximum as everywhere in crossattn; the grid is ``viz.layer_word_grid``, the CLI's
``.grid.png``. Self- versus cross-attention: a pixel's self-attention row is a map over the image
(where it looks, O((HW)²) to compute); its cross-attention row is a distribution over the prompt's
tokens (what it reads, O(HW·T)).
"""

from __future__ import annotations

import io

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
        panels.append((viz.heat_frame(heat, image, scale=SCALE), f"{word} (max {float(heat.max()):.2f})"))
    return panels


def step_overlays(maps, image, step: int) -> list[tuple[object, str]]:
    """Every word at sampling step ``step`` (1-based; 0 = the mean over all steps)."""
    if not 0 <= step <= maps.num_steps:
        raise ValueError(f"step {step} is out of range; steps go from 1 to {maps.num_steps} (0 = mean)")
    panels = word_overlays(maps, image, step=step - 1 if step else None)
    label = f"step {step}/{maps.num_steps}" if step else "mean over steps"
    return [(frame, f"{label} · {caption}") for frame, caption in panels]


def head_overlays(maps, image, layer: str) -> list[tuple[object, str]]:
    """One layer's heads × words (bertviz's head view, for cross-attention); mean over steps."""
    heads = maps.meta["layers"][layer]["heads"] if maps.meta["per_head"] else 0
    panels = []
    for head in range(heads):
        for frame, caption in word_overlays(maps, image, head=head, layers=layer):
            panels.append((frame, f"head {head} · {caption}"))
    return panels


def layer_grid(maps, image):
    """The CLI's layer × word grid (``crossattn maps``' ``.grid.png``) as a PIL image."""
    from PIL import Image

    from .. import viz

    fig = viz.layer_word_grid(maps, list(dict.fromkeys(maps.words_for(0))), image)
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


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
