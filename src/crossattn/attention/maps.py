"""``AttentionMaps``: the recorded attention of one sampling, as per-token, per-word and per-pixel maps.

Tensors, one per layer, shaped ``(S, R, heads, N, K)``: S steps (or 1, the mean over steps),
R image rows, heads (or 1, the mean over heads), N query positions (``height × width`` of the
layer), K keys (text tokens for cross-attention, image positions for self-attention). Every
``(…, n, :)`` row is a probability distribution over the K keys.

A map for one image is the layer maps upsampled (bilinear, weights summing to 1, so token maps
still sum to 1 over tokens) to the image size and averaged over the selected layers, as DAAM does.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from .layers import matches
from .words import merge_words, primary_words

METADATA_KEY = "crossattn"


class AttentionMaps:
    """Recorded attention maps with their metadata (prompt, tokens, layers, steps, guidance half)."""

    def __init__(self, tensors: dict[str, torch.Tensor], meta: dict):
        self.tensors = tensors
        self.meta = meta

    def __repr__(self) -> str:
        h, w = self.image_size
        return (
            f"AttentionMaps(prompt={self.prompt(0)!r}, images={self.num_images}, "
            f"layers={len(self.cross_layers)} cross + {len(self.self_layers)} self, steps={self.num_steps}, "
            f"per_step={self.meta['per_step']}, per_head={self.meta['per_head']}, halves={self.halves}, size={h}x{w})"
        )

    # ------------------------------------------------------------------ what was recorded

    @property
    def layer_names(self) -> list[str]:
        return list(self.tensors)

    @property
    def cross_layers(self) -> list[str]:
        return [n for n in self.tensors if self.meta["layers"][n]["kind"] == "cross"]

    @property
    def self_layers(self) -> list[str]:
        return [n for n in self.tensors if self.meta["layers"][n]["kind"] == "self"]

    @property
    def num_images(self) -> int:
        return len(self.meta["images"])

    @property
    def num_steps(self) -> int:
        return self.meta["steps"]

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the generated image; every map is upsampled to it."""
        return tuple(self.meta["image_size"])

    @property
    def halves(self) -> list[str]:
        """Guidance half of each image row: ``cond``, ``uncond``, or ``all`` (no pipeline call seen)."""
        return [image["half"] for image in self.meta["images"]]

    def prompt(self, image: int = 0) -> str | None:
        return self.meta["images"][self._image(image)]["prompt"]

    @property
    def tokens(self) -> list[str]:
        """Tokens of image 0's prompt, start and end included (:meth:`tokens_for` for other images)."""
        return self.tokens_for(0)

    @property
    def words(self) -> list[str]:
        """Words of image 0's prompt (subword tokens merged; :meth:`words_for` for other images)."""
        return self.words_for(0)

    def tokens_for(self, image: int) -> list[str]:
        tokens = self.meta["images"][self._image(image)]["tokens"]
        if tokens is None:  # prompt unknown (bare U-Net or prompt_embeds): number the positions
            return [f"<{i}>" for i in range(self._num_keys())]
        return tokens[: self._num_keys()]

    def encoders_for(self, image: int) -> list[str] | None:
        """The encoder of each of :meth:`tokens_for`'s tokens (joint models: ``clip``, ``t5``, ``none``); None
        when one tokenizer made them all (U-Net models)."""
        encoders = self.meta["images"][self._image(image)].get("encoders")
        return None if encoders is None else encoders[: self._num_keys()]

    @property
    def encoders(self) -> list[str]:
        """The encoders whose tokens image 0's maps hold, in order (``[]`` for one-tokenizer models)."""
        return list(dict.fromkeys(self.encoders_for(0) or []))

    def words_for(self, image: int, encoder: str | None = None) -> list[str]:
        """The words of one image's prompt, from ``encoder``'s tokens; by default from the first encoder
        with words (joint models feed the prompt through several: SD3's CLIP and T5 tokens)."""
        if encoder is None:
            return [word for word, _ in primary_words(self.tokens_for(image), self.encoders_for(image))]
        return [word for word, _ in self._spans(image, encoder)]

    def _spans(self, image: int, encoder: str | None) -> list[tuple[str, list[int]]]:
        """``(word, token indices)`` of one image (of one encoder's tokens when ``encoder`` is named)."""
        encoders = self.encoders_for(image)
        spans = merge_words(self.tokens_for(image), encoders)
        if encoder is None:
            return spans
        known = list(dict.fromkeys(encoders or []))
        if encoder not in known:
            raise ValueError(
                f"encoder {encoder!r} fed no tokens; encoders are: {', '.join(known) or '(one tokenizer)'}"
            )
        return [(w, idx) for w, idx in spans if encoders[idx[0]] == encoder]

    # ------------------------------------------------------------------ maps

    def attention(self, layer: str, image: int = 0, step: int | None = None, head: int | None = None) -> torch.Tensor:
        """One layer's probabilities ``(N, K)`` for one image: mean over steps/heads unless one is chosen."""
        if layer not in self.tensors:
            raise ValueError(f"layer {layer!r} was not recorded; recorded layers: {', '.join(self.tensors)}")
        x = self.tensors[layer][:, self._image(image)]  # (S, heads, N, K)
        x = self._pick(x, step, "per_step", self.num_steps, "step", 0)  # (heads, N, K)
        return self._pick(x, head, "per_head", x.shape[0], "head", 0)  # (N, K)

    def token_map(self, index: int, image: int = 0, layers=None, step=None, head=None) -> torch.Tensor:
        """Cross-attention to token ``index`` (into :attr:`tokens`), ``(H, W)``, averaged over layers."""
        if not 0 <= index < self._num_keys():
            raise ValueError(f"token index {index} out of range; the prompt has tokens 0..{self._num_keys() - 1}")
        return self._cross_map([index], image, layers, step, head)

    def word_map(self, word: str, image: int = 0, layers=None, step=None, head=None, encoder=None) -> torch.Tensor:
        """Cross-attention to ``word`` (all its subword tokens and occurrences, summed), ``(H, W)``; on
        joint models over every encoder's tokens of it, or ``encoder``'s only (``"clip"``, ``"t5"``)."""
        spans = self._spans(image, encoder)
        indices = [i for w, idx in spans if w == word.lower().strip() for i in idx]
        if not indices:
            words = ", ".join(w for w, _ in spans) or "(none)"
            raise ValueError(f"word {word!r} is not in the prompt of image {image}; words are: {words}")
        return self._cross_map(indices, image, layers, step, head)

    def pixel_map(self, x: int, y: int, image: int = 0, layers=None, step=None, head=None) -> torch.Tensor:
        """Self-attention of the image location at column ``x``, row ``y`` (image pixels), ``(H, W)``."""
        height, width = self.image_size
        if not (0 <= x < width and 0 <= y < height):
            raise ValueError(f"pixel ({x}, {y}) is outside the {width}x{height} image")
        maps = []
        for name in self.select(layers, "self"):
            info = self.meta["layers"][name]
            h, w = info["height"], info["width"]
            row = self.attention(name, image, step, head)[(y * h // height) * w + x * w // width]  # (h*w,)
            maps.append(self._upsample(row.view(1, h, w)))
        return torch.stack(maps).mean(0)[0]  # (H, W)

    def select(self, layers, kind: str) -> list[str]:
        """Recorded layer names of ``kind`` matching ``layers`` (None, int resolution, glob, regex, or a list)."""
        pool = [n for n in self.tensors if self.meta["layers"][n]["kind"] == kind]
        if not pool:
            raise ValueError(f"no {kind}-attention layers were recorded; trace with kind='{kind}' or 'both'")
        if layers is None:
            return pool
        patterns = [layers] if isinstance(layers, str | int) else list(layers)
        res = {n: self.meta["layers"][n]["resolution"] for n in pool}
        chosen = [n for n in pool if any(matches(n, res[n], p) for p in patterns)]
        if not chosen:
            raise ValueError(
                f"layers {patterns!r} match no recorded {kind}-attention layer; layers are: {', '.join(pool)}"
            )
        return chosen

    def _cross_map(self, indices: list[int], image, layers, step, head) -> torch.Tensor:
        maps = []
        for name in self.select(layers, "cross"):
            info = self.meta["layers"][name]
            probs = self.attention(name, image, step, head)[:, indices].sum(-1)  # (N,)
            maps.append(self._upsample(probs.view(1, info["height"], info["width"])))
        return torch.stack(maps).mean(0)[0]  # (H, W)

    def _upsample(self, x: torch.Tensor) -> torch.Tensor:
        """``(C, h, w)`` → ``(C, H, W)`` bilinear: convex weights, so sums over tokens are kept."""
        return F.interpolate(x[None], size=self.image_size, mode="bilinear", align_corners=False)[0]

    def _pick(self, x: torch.Tensor, index, flag: str, count: int, what: str, dim: int) -> torch.Tensor:
        if index is None:
            return x.mean(dim)
        if not self.meta[flag]:
            raise ValueError(f"{what} maps were not recorded; trace with {flag}=True (CLI: --{flag.replace('_', '-')})")
        if not -count <= index < count:
            raise ValueError(f"{what} {index} out of range; {count} {what}s were recorded")
        return x.select(dim, index)

    def _image(self, image: int) -> int:
        if not -self.num_images <= image < self.num_images:
            raise ValueError(f"image {image} out of range; {self.num_images} images were recorded")
        return image

    def _num_keys(self) -> int:
        """Text positions K the cross-attention layers saw (the tokens' count when only self-attention was kept)."""
        if not self.cross_layers:
            return max(len(image["tokens"] or []) for image in self.meta["images"])
        return self.tensors[self.cross_layers[0]].shape[-1]

    def subset(self, images: list[int]) -> AttentionMaps:
        """The maps of some image rows only (e.g. one file per generated image)."""
        rows = [self._image(i) for i in images]
        tensors = {name: t[:, rows].clone() for name, t in self.tensors.items()}  # (S, len(rows), ...)
        meta = {**self.meta, "images": [self.meta["images"][i] for i in rows]}
        return AttentionMaps(tensors, meta)

    # ------------------------------------------------------------------ files

    def save(self, path: str | Path) -> tuple[Path, Path]:
        """Write ``<path>.safetensors`` (tensors, metadata in its header) and ``<path>.json`` (metadata)."""
        from safetensors.torch import save_file

        from ..files import atomic_write, atomic_write_json

        target = Path(path)
        target = target if target.suffix == ".safetensors" else target.with_name(target.name + ".safetensors")
        meta = {**self.meta, "shapes": {n: list(t.shape) for n, t in self.tensors.items()}}
        header = {METADATA_KEY: json.dumps(meta)}
        tensors = {n: t.contiguous() for n, t in self.tensors.items()}
        atomic_write(target, lambda tmp: save_file(tensors, str(tmp), metadata=header))
        return target, atomic_write_json(target.with_suffix(".json"), meta)

    def to_html(self, path: str | Path, image=None, image_index: int = 0) -> Path:
        """Write a self-contained ``.maps.html`` view (word, layer, head, step selectors; no network)."""
        from .html import write_html

        return write_html(self, path, image, image_index)

    @classmethod
    def load(cls, path: str | Path) -> AttentionMaps:
        """Read maps written by :meth:`save` (the tensors and the metadata from the ``.safetensors`` file)."""
        from safetensors import safe_open

        target = Path(path)
        if not target.is_file():
            raise FileNotFoundError(f"attention maps file {target} does not exist")
        with safe_open(str(target), framework="pt") as fh:
            header = fh.metadata() or {}
            if METADATA_KEY not in header:
                raise ValueError(f"{target} is not a crossattn maps file (no {METADATA_KEY!r} metadata)")
            meta = json.loads(header[METADATA_KEY])
            meta.pop("shapes", None)
            tensors = {name: fh.get_tensor(name) for name in meta["layers"]}
        return cls(tensors, meta)
