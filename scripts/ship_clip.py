"""Install a trained mini-CLIP (``crossattn train-clip``'s ``RUN/final``) as ``src/crossattn/pretrained/clip``.

    python scripts/ship_clip.py RUN/final

Loads the folder with stock ``CLIPModel`` (safetensors only), stores it in fp16 with the image
processor and the tokenizer as ``vocab.json`` + ``merges.txt`` (transformers rebuilds the 3.6 MB
``tokenizer.json`` from them), checks that stock ``CLIPModel`` / ``CLIPProcessor`` load the result
and score like the source, refuses a package over the 45 MB budget (default model + CLIP), and
replaces the shipped folder atomically. Prints the size and the content hash.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

from crossattn.files import atomic_dir, folder_hash
from crossattn.models.clip_model import ClipConfig, default_clip_dir, load_clip, save_clip_folder

BUDGET_BYTES = 45 * 1024 * 1024  # the whole src/crossattn/pretrained (issue 14)


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def check_round_trip(source, shipped: Path) -> None:
    """Stock classes load the shipped folder and give the source's logits (fp16 rounding aside)."""
    from transformers import CLIPModel, CLIPProcessor

    from crossattn.data.shapes import make_scene, scene_rng

    scenes = [make_scene(scene_rng(1234, i), 32) for i in range(8)]
    processor = CLIPProcessor.from_pretrained(shipped)
    inputs = processor(
        text=[s.caption for s in scenes], images=[s.image for s in scenes], return_tensors="pt", padding="max_length"
    )
    model = CLIPModel.from_pretrained(shipped, use_safetensors=True).float().eval()
    with torch.no_grad():
        got, want = model(**inputs).logits_per_image, source(**inputs).logits_per_image
    diff = float((got - want).abs().max())
    print(f"round trip: logits (scale {float(model.logit_scale.exp()):.1f}) within {diff:.4f} of the fp32 source")
    if diff > 0.5:
        raise ValueError(f"the shipped CLIP scores differ from the source by {diff:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("final", help="a trained CLIP folder, e.g. runs/clip/final")
    args = parser.parse_args()
    source = Path(args.final)
    if list(source.rglob("*.bin")) or list(source.rglob("*.pkl")):
        raise ValueError(f"{source} holds pickled files; only safetensors are shipped")
    model, tokenizer = load_clip(source)
    model = model.float()
    config_file = source / "clip_config.json"
    cfg = ClipConfig.load(config_file) if config_file.is_file() else None
    target = default_clip_dir()
    with atomic_dir(target) as tmp:
        save_clip_folder(copy.deepcopy(model).half(), tokenizer, tmp, cfg)
        (tmp / "tokenizer.json").unlink(missing_ok=True)
        if (source / "training_config.json").is_file():
            (tmp / "training_config.json").write_bytes((source / "training_config.json").read_bytes())
        check_round_trip(model, tmp)
        package = folder_size(target.parent) - (folder_size(target) if target.exists() else 0)  # tmp is inside
        if package > BUDGET_BYTES:
            raise ValueError(f"the shipped models would be {package / 2**20:.1f} MB; the budget is 45 MB")
    print(
        f"shipped {source} -> {target}: {folder_size(target) / 2**20:.1f} MB (package {package / 2**20:.1f} MB), "
        f"hash {folder_hash(target)}"
    )


if __name__ == "__main__":
    main()
