"""Does the text encoder tell relations apart? Two text encoders side by side, plus the mini-CLIP's
held-out hard-negative accuracy (clean and with pixel noise training never added).

1. Relation-flip state difference: for prompt pairs that differ only by left of ↔ right of or
   above ↔ below, ‖a − b‖ / ‖a‖ of the last hidden states (what the U-Net's keys and values read)
   at the relation word and at the last object word, averaged over the pairs. Printed for each
   encoder: the pipeline's (``--pipeline``, default: the shipped model) and the CLIP folder's text
   tower (``--clip``, default: the shipped mini-CLIP).
2. Hard-negative accuracy: ``--n`` scenes of the training mix drawn from a seed no training code
   uses, each image scored against its caption and one negative of every kind that applies
   (:mod:`crossattn.data.negatives`); again with Gaussian noise σ = 8/255 on the pixels.

Bars (issue 14): state difference ≥ 0.50 at the relation word and ≥ 0.30 at the last word;
accuracy ≥ 0.98 per kind clean and ≥ 0.95 with noise.

    python benchmarks/text_encoder_probe.py [--pipeline PATH] [--clip PATH] [--n 1000] [--threads 1] [--out F.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from crossattn.data.captions import COLOURS, SHAPES, format_caption
from crossattn.data.negatives import FLIPPED, NEGATIVE_KINDS

HELD_OUT_SEED = 7_777_777  # training uses data seed 0, its probe 999_983
PAIRS = 108
BARS = {"relation_word": 0.50, "last_word": 0.30, "clean": 0.98, "noisy": 0.95}


def flip_pairs(n: int = PAIRS, seed: int = 0) -> list[tuple[str, str, str]]:
    """``(prompt, flipped prompt, relation)`` for ``n`` random two-object layouts."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        first = (str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)))
        second = first
        while second == first:
            second = (str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)))
        relation = list(FLIPPED)[i % 4]
        pairs.append(
            (
                format_caption([first, second], relation=relation),
                format_caption([first, second], relation=FLIPPED[relation]),
                relation,
            )
        )
    return pairs


@torch.no_grad()
def state_difference(text_encoder, tokenizer, pairs) -> dict[str, float]:
    """Mean ‖a − b‖ / ‖a‖ at the relation word's first token and at the last word's last token."""
    from crossattn.models.tokenizer import WordSpans

    length = text_encoder.config.max_position_embeddings
    spans = WordSpans(tokenizer, length)

    def states(prompts):
        ids = tokenizer(
            prompts, padding="max_length", max_length=length, truncation=True, return_tensors="pt"
        ).input_ids
        return text_encoder(ids).last_hidden_state  # (N, T, D)

    a, b = states([p for p, _, _ in pairs]), states([q for _, q, _ in pairs])
    at_relation, at_last = [], []
    for i, (prompt, _, _) in enumerate(pairs):
        word_spans = spans(prompt)
        relation_token = word_spans[3][0]  # "a X Y RELATION ...": word 3 opens the relation
        last_token = word_spans[-1][1] - 1
        for token, out in ((relation_token, at_relation), (last_token, at_last)):
            out.append(float((a[i, token] - b[i, token]).norm() / a[i, token].norm()))
    return {"relation_word": float(np.mean(at_relation)), "last_word": float(np.mean(at_last))}


def held_out_accuracy(judge, n: int, noise: float) -> dict[str, float]:
    from crossattn.data.shapes import make_scene, scene_rng
    from crossattn.evaluation.clip_judge import hard_negative_accuracy

    scenes = [make_scene(scene_rng(HELD_OUT_SEED, i), 32, noise=noise) for i in range(n)]
    return hard_negative_accuracy(judge, scenes, seed=HELD_OUT_SEED)


def load_encoders(pipeline: Path, clip: Path, judge) -> dict:
    """Name → (text encoder, tokenizer): the pipeline's and the CLIP folder's text tower."""
    from transformers import CLIPTextModel

    from crossattn.models.tokenizer import load_tokenizer

    return {
        f"pipeline text_encoder ({pipeline})": (
            CLIPTextModel.from_pretrained(pipeline / "text_encoder", use_safetensors=True).float().eval(),
            load_tokenizer(pipeline / "tokenizer", max_length=16),
        ),
        "mini-CLIP text tower": (
            CLIPTextModel.from_pretrained(clip, use_safetensors=True).float().eval(),
            judge.tokenizer,
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", help="pipeline folder whose text_encoder to probe (default: the shipped model)")
    parser.add_argument("--clip", help="mini-CLIP folder (default: src/crossattn/pretrained/clip)")
    parser.add_argument("--n", type=int, default=1000, help="held-out scenes (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="also write the numbers to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from crossattn.evaluation.clip_judge import ClipJudge
    from crossattn.models.clip_model import default_clip_dir
    from crossattn.models.loading import default_model_dir
    from crossattn.models.model import transformers_errors_only

    pipeline = Path(args.pipeline) if args.pipeline else default_model_dir()
    clip = Path(args.clip) if args.clip else default_clip_dir()
    judge = ClipJudge.load(clip)
    pairs = flip_pairs()
    with transformers_errors_only():  # no load report for the CLIP folder's vision keys the text model skips
        encoders = load_encoders(pipeline, clip, judge)
    report: dict = {"pairs": len(pairs), "state_difference": {}, "bars": BARS}
    print(f"relation-flip state difference (||a-b||/||a||, {len(pairs)} pairs)   relation word   last word")
    for name, (encoder, tokenizer) in encoders.items():
        diff = state_difference(encoder, tokenizer, pairs)
        report["state_difference"][name] = diff
        print(f"  {name:62s} {diff['relation_word']:8.3f} {diff['last_word']:12.3f}")
    for label, noise in (("clean", 0.0), ("noisy", 8 / 255)):
        start = time.perf_counter()
        accuracy = held_out_accuracy(judge, args.n, noise)
        report[label] = accuracy
        cells = "  ".join(f"{k} {accuracy[k]:.3f} (n={accuracy['n_' + k]})" for k in NEGATIVE_KINDS)
        ok = all(accuracy[k] >= BARS[label] for k in NEGATIVE_KINDS)
        print(
            f"hard-negative accuracy, {label} ({args.n} scenes, {time.perf_counter() - start:.1f} s): {cells}  "
            f"[bar {BARS[label]}: {'PASS' if ok else 'FAIL'}]"
        )
    clip_diff = report["state_difference"]["mini-CLIP text tower"]
    ok = clip_diff["relation_word"] >= BARS["relation_word"] and clip_diff["last_word"] >= BARS["last_word"]
    print(
        f"mini-CLIP state-difference bars (>= {BARS['relation_word']} / >= {BARS['last_word']}): {'PASS' if ok else 'FAIL'}"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
