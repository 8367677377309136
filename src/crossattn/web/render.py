"""Pictures for the page: the upscaled image, word overlays (mean, one step, one head), the
layer × word grid, a pixel's self-attention map and the words that pixel reads; a LoRA's maps beside its base
model's, with each word's numbers (``serve --lora``, "compare with the base model").

Overlays are ``viz.heat_frame`` (the colour map and blend of the CLI's GIF frames), each scaled to
its own maximum as everywhere in crossattn, so the small maps of joint-attention models (SD3, Flux:
the image→text block of one softmax over text and image tokens) show as clearly as a U-Net's; the
grid has the panels of the CLI's ``.grid.png``. Self- versus cross-attention: a pixel's self-attention
row is a map over the image (where it looks, O((HW)²) to compute); its cross-attention row is a
distribution over the prompt's tokens (what it reads, O(HW·T)).

Every picture of one image is drawn at one display scale (:func:`display_scale`): 8× for the small
images of crossattn's models, less for bigger ones; a click on the image maps back through it.
"""

from __future__ import annotations

SCALE = 8  # 32×32 images are shown 256×256, nearest neighbour
DISPLAY = 512  # pixels: bigger images are shown at a smaller scale (down to 1×), not 8× their size
IMAGE_TOKENS = "<image tokens>"  # joint models: the share of a pixel's attention that stays in the image


def display_scale(image) -> int:
    """How many times larger ``image`` is shown: :data:`SCALE`, less when that would pass :data:`DISPLAY`."""
    return max(1, min(SCALE, DISPLAY // max(image.width, image.height)))


def upscaled(image, scale: int | None = None):
    """The image ``scale``× (default :func:`display_scale`) larger, nearest neighbour (pixels stay square)."""
    from PIL import Image

    scale = display_scale(image) if scale is None else scale
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST)


def _value(x: float) -> str:
    """Two decimals, or two significant digits where that would read 0.00 (joint models' maps)."""
    return f"{x:.2f}" if abs(x) >= 0.005 or x == 0 else f"{x:.2g}"


def word_overlays(maps, image, step=None, head=None, layers=None) -> list[tuple[object, str]]:
    """``(overlay, caption)`` for every word of the prompt (mean over what is not chosen)."""
    from .. import viz

    panels = []
    scale = display_scale(image)
    for word in dict.fromkeys(maps.words_for(0)):
        heat = maps.word_map(word, layers=layers, step=step, head=head)  # (H, W)
        panels.append((viz.heat_frame(heat, image, scale=scale), f"{word} {_value(float(heat.max()))}"))
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


def layer_grid(maps, image, tile: int | None = None):
    """The layer × word grid (rows: cross-attention layers with their resolution; columns: words),
    each panel ``tile``× the image (default: half its display scale).

    The same panels as the CLI's ``.grid.png`` (``viz.layer_word_grid``), tiled with Pillow: a
    matplotlib figure of 7 × 7 axes takes ~2.5 s on a CPU, this ~0.1 s.
    """
    from .. import viz

    tile = max(1, display_scale(image) // 2) if tile is None else tile
    words = list(dict.fromkeys(maps.words_for(0)))
    names = maps.select(None, "cross")
    labels = [f"{viz._short(name)}\n{_resolution(maps.meta['layers'][name])}" for name in names]
    rows = [[viz.heat_frame(maps.word_map(w, layers=name), image, scale=tile) for w in words] for name in names]
    return labelled_grid(rows, labels, words)


def labelled_grid(rows: list[list], row_labels: list[str], column_labels: list[str]):
    """Pictures of one size in a grid (Pillow), a label left of each row and above each column (lines split by
    ``\\n``), 4 pixels between panels."""
    from PIL import Image, ImageDraw, ImageFont

    first = rows[0][0]
    across, down = first.width + 4, first.height + 4  # one panel and its gap
    font = ImageFont.load_default(size=13)
    left, top = 110, 7 + 15 * max(label.count("\n") + 1 for label in column_labels)
    grid = Image.new("RGB", (left + len(column_labels) * across, top + len(rows) * down), "white")
    draw = ImageDraw.Draw(grid)
    for col, label in enumerate(column_labels):
        draw.multiline_text((left + col * across + 4, 4), label, fill="black", font=font)
    for row, (label, panels) in enumerate(zip(row_labels, rows, strict=True)):
        y = top + row * down
        draw.multiline_text((4, y + (down - 4) // 2 - 14), label, fill="black", font=font)
        for col, panel in enumerate(panels):
            grid.paste(panel, (left + col * across, y))
    return grid


def _resolution(info: dict) -> str:
    """A layer's map size: ``16px`` when square, ``16x24`` (height × width) when not."""
    h, w = info.get("height", info["resolution"]), info.get("width", info["resolution"])
    return f"{info['resolution']}px" if h == w else f"{h}x{w}"


def to_pixel(index, image) -> tuple[int, int]:
    """A click at ``index`` = ``[x, y]`` on the shown image (:func:`upscaled`) → the image's pixel ``(x, y)``:
    x through its width, y through its height (one display scale; checked against each side)."""
    scale = display_scale(image)
    x, y = (int(v) // scale for v in index)
    if not (0 <= x < image.width and 0 <= y < image.height):
        raise ValueError(f"pixel ({x}, {y}) is outside the {image.width}x{image.height} image")
    return x, y


def pixel_panel(self_maps, image, x: int, y: int):
    """Where pixel (x, y) looks: its self-attention map over the image (scaled to its own max; on joint
    models the image→image block of the joint softmax), the pixel marked with a cross."""
    from PIL import ImageDraw

    from .. import viz

    scale = display_scale(image)
    frame = viz.heat_frame(self_maps.pixel_map(x, y), image, scale=scale)
    draw = ImageDraw.Draw(frame)
    cx, cy, r = x * scale + scale // 2, y * scale + scale // 2, SCALE * 2  # a 32-px cross
    for width, colour in ((5, "black"), (2, "white")):
        draw.line((cx - r, cy, cx + r, cy), fill=colour, width=width)
        draw.line((cx, cy - r, cx, cy + r), fill=colour, width=width)
    return frame


def joint(cross_maps) -> bool:
    """Whether the maps come from a joint-attention model (SD3, Flux: tokens named by encoder)."""
    return cross_maps.meta.get("joint", cross_maps.encoders_for(0) is not None)  # PixArt-Σ, Sana: named, not joint


def pixel_words(cross_maps, x: int, y: int) -> dict[str, float]:
    """What pixel (x, y) reads: its cross-attention row, summed per word (mean over layers, steps, heads).

    U-Net models: the start token and the end/padding tokens take the rest of the probability, so the
    bars sum to 1. Joint models (one softmax over text and image tokens, where the image keeps most of
    it and every word's probability would show as 0 %): each word's share (all its tokens, every
    encoder's) of the pixel's attention to text, and the other text tokens' (start, end, padding), which
    together sum to 1; :func:`reads_label` gives the text's share of the whole.
    """
    words = {word: float(cross_maps.word_map(word)[y, x]) for word in dict.fromkeys(cross_maps.words_for(0))}
    if not joint(cross_maps):
        row = {**start_token(cross_maps, x, y), **words}
        row["<end>/padding"] = max(0.0, 1.0 - sum(row.values()))
        return row
    text = float(text_share(cross_maps)[y, x])
    other = max(0.0, text - sum(words.values()))
    per_text = 1.0 / text if text > 0 else 0.0  # renormalised over the text keys, for display
    return {**{word: p * per_text for word, p in words.items()}, "<other text tokens>": other * per_text}


def start_token(cross_maps, x: int, y: int) -> dict[str, float]:
    """``{"<start>": p}`` when the prompt's first token is a start token outside every word (CLIP's); empty
    when it is a word's first piece (T5 and other tokenizers without a start token: PixArt-Σ's "▁a"),
    which the word's bar already counts."""
    from ..attention.words import merge_words

    spans = merge_words(cross_maps.tokens_for(0), cross_maps.encoders_for(0))
    if any(0 in indices for _, indices in spans):
        return {}
    return {"<start>": float(cross_maps.token_map(0)[y, x])}


def text_share(cross_maps):
    """``(H, W)``: the probability each pixel gives all text tokens together, as :meth:`word_map` would
    give a word made of every token (mean over layers, steps and heads); 1 on U-Net models."""
    import torch
    import torch.nn.functional as F

    maps = []
    for name in cross_maps.cross_layers:
        info = cross_maps.meta["layers"][name]
        total = cross_maps.attention(name).sum(-1).view(1, 1, info["height"], info["width"])  # (N,) → (1, 1, h, w)
        maps.append(F.interpolate(total.float(), size=cross_maps.image_size, mode="bilinear", align_corners=False))
    return torch.stack(maps).mean(0)[0, 0]  # (H, W)


def reads_label(cross_maps, x: int, y: int) -> str:
    """The title of pixel (x, y)'s word bars: which attention they are (joint models: one softmax over
    text and image tokens, the bars renormalised over the text, and the text's and the image's share)."""
    if not joint(cross_maps):
        return f"cross-attention of pixel ({x}, {y}): what it reads"
    text = float(text_share(cross_maps)[y, x])
    return (
        f"joint attention of pixel ({x}, {y}): what it reads, as shares of its attention to text "
        f"(text {text:.1%} of all, {IMAGE_TOKENS} {1 - text:.1%})"
    )


def compare_grid(base, maps, image):
    """The base model over the LoRA, the same seed (the layout of ``maps --compare-base``'s ``.compare.png``, drawn
    with Pillow): the image and each word's overlay (each scaled to its own maximum) in a row per model, each word's
    column headed by how far its map moved from the base's (JS, bits); ``base``: a
    :class:`~crossattn.sampling.compare.BaseComparison`, ``maps`` and ``image`` the LoRA's."""
    from .. import viz

    tile = max(1, display_scale(image) // 2)
    words = list(dict.fromkeys(maps.words_for(0)))
    rows = []
    for m, picture in ((base.maps, base.image), (maps, image)):
        frames = [viz.heat_frame(m.word_map(w), picture, scale=tile) for w in words]
        rows.append([upscaled(picture, tile), *frames])
    moved = [f"{w}\nmoved {base.numbers[w]['moved']:.3f}" if w in base.numbers else w for w in words]
    return labelled_grid(rows, ["base model\n(LoRA off)", "with the LoRA"], ["image\n", *moved])


def compare_table(numbers: dict[str, dict[str, float]]) -> str:
    """The comparison's numbers per word as a Markdown table: how far the word's map moved from the base model's
    (Jensen-Shannon divergence, bits, 0 … 1) and its mass in its top 10 % of pixels, base and LoRA."""
    rows = [
        f"| {word.replace('|', '&#124;')} | {n['moved']:.3f} | {n['base_concentration']:.2f} | {n['concentration']:.2f} |"
        for word, n in numbers.items()
    ]
    what = "**Above: the base model (top row, the LoRA off) over the LoRA (bottom row), same seed.**\n\n"
    head = "| word | moved from the base (JS, bits) | top-10 % mass, base | top-10 % mass, LoRA |\n|---|---|---|---|"
    return what + "\n".join([head, *rows])
