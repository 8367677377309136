"""The mini-CLIP as a judge: CLIP score of an image against a caption, and hard-negative accuracy.

CLIP score is ``100 · max(cos(image, text), 0)`` of the projected, normalised features (the form
torchmetrics reports; Hessel et al., "CLIPScore", EMNLP 2021). Hard-negative accuracy is the share of
images whose score is higher for their own caption than for a caption with one fact changed
(:mod:`crossattn.data.negatives`): it needs no scene analyzer, so it also scores models fine-tuned on
data the analyzer does not know.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from ..data.negatives import applicable_kinds, hard_negative


def _features(output) -> torch.Tensor:
    """transformers 5 returns a model output whose ``pooler_output`` holds the projection; 4 a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ClipJudge:
    """Scores images (PIL, uint8 arrays or ``(B, 3, H, W)`` tensors in [-1, 1]) against captions."""

    def __init__(self, model, tokenizer, processor=None):
        from ..models.clip_model import image_processor

        self.model, self.tokenizer = model.eval(), tokenizer
        self.processor = processor or image_processor()
        self.max_length = model.config.text_config.max_position_embeddings
        self.cache: dict[str, torch.Tensor] = {}

    @classmethod
    def load(cls, folder=None) -> ClipJudge:
        from ..models.clip_model import load_clip

        return cls(*load_clip(folder))

    @torch.no_grad()
    def image_features(self, images) -> torch.Tensor:
        """Normalised image embeddings ``(B, P)``."""
        if not isinstance(images, torch.Tensor):
            images = self.processor(images=list(images), return_tensors="pt").pixel_values  # (B, 3, H, W)
        features = _features(self.model.get_image_features(pixel_values=images.float()))
        return torch.nn.functional.normalize(features, dim=-1)

    @torch.no_grad()
    def text_features(self, captions: list[str]) -> torch.Tensor:
        """Normalised text embeddings ``(N, P)``, cached per caption."""
        new = [c for c in dict.fromkeys(captions) if c not in self.cache]
        if new:
            ids = self.tokenizer(
                new, padding="max_length", max_length=self.max_length, truncation=True, return_tensors="pt"
            ).input_ids  # (n, T)
            features = torch.nn.functional.normalize(_features(self.model.get_text_features(input_ids=ids)), dim=-1)
            self.cache.update(zip(new, features, strict=True))
        return torch.stack([self.cache[c] for c in captions])

    def similarity(self, images, captions: list[str]) -> torch.Tensor:
        """Cosine similarity of image ``i`` with caption ``i``, ``(B,)``."""
        return (self.image_features(images) * self.text_features(captions)).sum(-1)

    def clip_score(self, images, captions: list[str]) -> torch.Tensor:
        """``100 · max(cos, 0)`` per image, ``(B,)``."""
        return 100 * self.similarity(images, captions).clamp(min=0)

    def prefers(self, images, captions: list[str], negatives: list[str]) -> torch.Tensor:
        """Whether each image is closer to its caption than to its negative, ``(B,)`` bool."""
        image = self.image_features(images)  # (B, P)
        return (image * self.text_features(captions)).sum(-1) > (image * self.text_features(negatives)).sum(-1)


def hard_negative_accuracy(judge: ClipJudge, scenes, seed: int = 0, batch: int = 256) -> dict[str, float]:
    """Per negative kind, the share of ``scenes`` (``Scene`` objects) scored above that negative.

    Every scene gets one negative of each kind that applies to its caption (negatives drawn from
    ``seed``); accuracies are over the scenes a kind applies to, with the count under ``"n_KIND"``.
    """
    from ..data.captions import parse_caption

    rng = np.random.default_rng(seed)
    rows: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for i, scene in enumerate(scenes):
        spec = parse_caption(scene.caption)
        for kind in applicable_kinds(spec):
            rows[kind].append((i, hard_negative(spec, kind, rng)))
    images = [scene.image for scene in scenes]
    features = torch.cat([judge.image_features(images[s : s + batch]) for s in range(0, len(images), batch)])
    own = (features * judge.text_features([s.caption for s in scenes])).sum(-1)  # (N,)
    result: dict[str, float] = {}
    for kind, pairs in rows.items():
        index = torch.tensor([i for i, _ in pairs])
        negative = (features[index] * judge.text_features([n for _, n in pairs])).sum(-1)
        result[kind] = float((own[index] > negative).float().mean())
        result[f"n_{kind}"] = len(pairs)
    return result


def clip_table(judge: ClipJudge, results, seed: int = 0) -> dict[str, dict]:
    """Per scene kind of an evaluation (and ``all``): mean CLIP score of each image against its prompt,
    and the share of images closer to their prompt than to its hard negative (one per prompt: a
    structural one where the prompt has a relation or position, else colour or shape)."""
    from ..data.captions import parse_caption
    from ..data.negatives import training_negatives

    rng = np.random.default_rng(seed)
    captions = [r.prompt.caption for r in results]
    negatives = [training_negatives(parse_caption(c), 1, rng)[0] for c in captions]
    images = [r.image for r in results]
    scores = judge.clip_score(images, captions)  # (N,)
    prefers = judge.prefers(images, captions, negatives)  # (N,)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(results):
        groups[r.prompt.kind].append(i)
        groups["all"].append(i)
    return {
        kind: {
            "clip_score": round(float(scores[index].mean()), 2),
            "prefers_prompt": round(float(prefers[index].float().mean()), 4),
            "n": len(index),
        }
        for kind, index in sorted(groups.items())
    }


def judge_results(results, clip: str | None = None, seed: int = 0) -> tuple[dict | None, str | None]:
    """``(clip_table, None)`` with the mini-CLIP at ``clip`` (default: the shipped one), or
    ``(None, reason)`` when there is none to judge with."""
    from ..models.clip_model import default_clip_dir

    folder = clip if clip is not None else default_clip_dir()
    try:
        judge = ClipJudge.load(folder)
    except FileNotFoundError as error:
        if clip is not None:
            raise
        return None, str(error)
    size, wanted = np.asarray(results[0].image).shape[0], judge.model.config.vision_config.image_size
    if size != wanted:
        return None, f"images are {size}x{size}; the mini-CLIP at {folder} reads {wanted}x{wanted}"
    return clip_table(judge, results, seed), None
