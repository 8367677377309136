"""Pictures of attention maps: word overlays, a layer × word grid, a timestep GIF.

Drawing functions take a matplotlib ``ax`` (or ``axes``) so they fit in any figure or notebook;
the helpers that make a figure return it. matplotlib is imported only when a function runs.
Each panel is scaled from 0 to its own maximum, which the title shows, so panels with little
attention are not mistaken for strong ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CMAP = "jet"


def to_array(image) -> np.ndarray:
    """A PIL image, an ``(H, W, 3)`` array (uint8 or [0, 1]) or a ``(3, H, W)`` tensor in [0, 1] → float ``(H, W, 3)``."""
    if hasattr(image, "detach"):  # torch tensor (3, H, W)
        image = image.detach().float().cpu().permute(1, 2, 0).numpy()
    array = np.asarray(image)
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    return np.clip(array[..., :3].astype(np.float32), 0.0, 1.0)


def draw_overlay(ax, heat, image=None, title: str | None = None, alpha: float = 0.55) -> None:
    """Draw ``heat`` (an ``(H, W)`` tensor or array) over ``image`` on ``ax``."""
    heat = np.asarray(heat.detach().cpu() if hasattr(heat, "detach") else heat, dtype=np.float32)
    if image is not None:
        ax.imshow(to_array(image), interpolation="nearest")
    ax.imshow(heat, cmap=CMAP, alpha=alpha if image is not None else 1.0, vmin=0.0, vmax=max(float(heat.max()), 1e-8))
    if title:
        top = float(heat.max())  # joint-attention maps share the attention with hundreds of keys: small
        ax.set_title(f"{title}\nmax {top:.2f}" if top >= 0.005 else f"{title}\nmax {top:.1e}", fontsize=8)
    ax.set_axis_off()


def figure(rows: int, cols: int, size: float = 1.8):
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows + 0.4), squeeze=False)
    return fig, axes


def draw_word_row(axes, maps, image=None, words=None, image_index: int = 0, **select) -> None:
    """One row: the image, then one overlay per word (default: every word of the prompt)."""
    words = list(words) if words is not None else maps.words_for(image_index)
    if image is not None:
        axes[0].imshow(to_array(image), interpolation="nearest")
        axes[0].set_title("image", fontsize=8)
        axes[0].set_axis_off()
        axes = axes[1:]
    if len(axes) < len(words):
        raise ValueError(f"{len(words)} words but only {len(axes)} axes for them")
    for ax, word in zip(axes, words, strict=False):
        draw_overlay(ax, maps.word_map(word, image=image_index, **select), image, word)


def word_row(maps, images=None, words=None, **select):
    """A figure with one row per image: the image and its word overlays."""
    images = list(images) if images is not None else [None] * maps.num_images
    rows = [maps.words_for(i) if words is None else list(words) for i in range(len(images))]
    cols = max(len(r) for r in rows) + (images[0] is not None)
    fig, axes = figure(len(images), cols)
    for i, (image, row_words) in enumerate(zip(images, rows, strict=True)):
        draw_word_row(axes[i], maps, image, row_words, image_index=i, **select)
        for ax in axes[i][len(row_words) + (image is not None) :]:
            ax.set_axis_off()
    fig.tight_layout()
    return fig


def layer_word_grid(maps, words=None, image=None, image_index: int = 0, layers=None, **select):
    """A figure: one row per cross-attention layer, one column per word."""
    words = list(words) if words is not None else maps.words_for(image_index)
    names = maps.select(layers, "cross")
    fig, axes = figure(len(names), len(words))
    for row, name in zip(axes, names, strict=True):
        for ax, word in zip(row, words, strict=True):
            draw_overlay(ax, maps.word_map(word, image=image_index, layers=name, **select), image, word)
        res = maps.meta["layers"][name]["resolution"]
        row[0].text(
            -0.1, 0.5, f"{_short(name)}\n{res}px", transform=row[0].transAxes, ha="right", va="center", fontsize=7
        )
    fig.tight_layout()
    return fig


def _short(name: str) -> str:
    """``down_blocks.1.attentions.0.transformer_blocks.0.attn2`` → ``down1.a0.t0``; joint layers:
    ``transformer_blocks.3.attn.text`` → ``joint3``, ``single_transformer_blocks.3.attn.text`` → ``single3``."""
    if name.endswith((".attn.text", ".attn.image")):
        kind, index = name.split(".")[:2]
        return ("single" if kind.startswith("single") else "joint") + index
    parts = name.replace("_blocks", "").replace("_block", "").split(".")
    keep = [p for p in parts if p not in ("attentions", "transformer", "attn1", "attn2")]
    return ".".join(keep)


def pixel_figure(maps, x: int, y: int, image=None, image_index: int = 0, **select):
    """A figure: the self-attention map of pixel (x, y), marked with a cross."""
    fig, axes = figure(1, 1, size=3.0)
    ax = axes[0][0]
    draw_overlay(ax, maps.pixel_map(x, y, image=image_index, **select), image, f"self-attention of pixel ({x}, {y})")
    ax.plot([x], [y], marker="+", color="white", markersize=12)
    return fig


def heat_frame(heat, image=None, scale: int = 8, vmax: float | None = None, alpha: float = 0.55):
    """One colour frame (PIL image): ``heat`` in the colour map, blended over ``image``, upscaled ``scale``×."""
    import matplotlib
    from PIL import Image

    heat = np.asarray(heat.detach().cpu() if hasattr(heat, "detach") else heat, dtype=np.float32)
    top = vmax if vmax is not None else max(float(heat.max()), 1e-8)
    colour = matplotlib.colormaps[CMAP](np.clip(heat / top, 0.0, 1.0))[..., :3]  # (H, W, 3)
    if image is not None:
        colour = (1 - alpha) * to_array(image) + alpha * colour
    frame = Image.fromarray((colour * 255).round().astype(np.uint8))
    return frame.resize((frame.width * scale, frame.height * scale), Image.NEAREST)


def timestep_gif(maps, word: str, path: str | Path, image=None, image_index: int = 0, duration_ms: int = 250):
    """Write a GIF of how ``word``'s map forms over the sampling steps (needs ``per_step=True``).

    All frames share one colour scale (the largest value over the steps), so growth is visible.
    """
    from .files import atomic_write

    heats = [maps.word_map(word, image=image_index, step=s) for s in range(maps.num_steps)]
    top = max(float(h.max()) for h in heats)
    frames = [heat_frame(h, image, vmax=top) for h in heats]
    return atomic_write(
        path,
        lambda tmp: frames[0].save(
            tmp, format="GIF", save_all=True, append_images=frames[1:], duration=duration_ms, loop=0
        ),
    )


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Save a figure atomically as PNG and close it."""
    import matplotlib.pyplot as plt

    from .files import atomic_write

    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight"))
    finally:
        plt.close(fig)
