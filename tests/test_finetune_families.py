"""Fine-tuning SD-1.5 and SDXL folders (issue 39): the latent loop's conditioning matches the pipelines', a run
with validation maps stops and resumes, and its outputs load in stock diffusers and in ``crossattn maps
--lora --compare-base``; the validation numbers; every DATA layout (metadata.jsonl / .csv, .txt captions, a
``datasets`` folder) fine-tunes both families. Prior images, text-encoder LoRA and a SIGKILLed run:
``test_finetune_families_prior.py``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from crossattn.cli import main

from .family_pipelines import build_family, load_family
from .model_copies import bpe_copy

pytest.importorskip("peft")

FAMILIES = ("sd15", "sdxl")


@pytest.fixture(scope="module")
def family_dirs(family_dir, tmp_path_factory):
    """The tiny SD-1.5 and SDXL pipelines as diffusers folders: copies of the session's (``conftest.family_dir``, saved
    once a suite run) with BPE-file tokenizers (:func:`model_copies.bpe_copy`: each run here reads them often)."""
    root = tmp_path_factory.mktemp("families")
    return {name: bpe_copy(family_dir(name), root / name) for name in FAMILIES}


@pytest.fixture(scope="module")
def ring_data(tmp_path_factory):
    """Four 16×16 red rings (the tiny families' image size) captioned "a red ring"."""
    folder = tmp_path_factory.mktemp("rings")
    rows = []
    for i in range(4):
        image = np.full((16, 16, 3), 255, np.uint8)
        image[3 + i % 2 : 13, 3:13] = (220, 50, 47)
        image[6:10, 6:10] = 255
        Image.fromarray(image).save(folder / f"{i}.png")
        rows.append(json.dumps({"file_name": f"{i}.png", "text": "a red ring"}) + "\n")
    (folder / "metadata.jsonl").write_text("".join(rows))
    return folder


def finetune(data, model, out, steps: int, *extra: str, validate: bool = True) -> int:
    """A LoRA + new-word run; with ``validate``, validation maps of "a red ring" every 2 steps."""
    argv = ["finetune", str(data), "--model", str(model), "--out", str(out), "--steps", str(steps)]
    argv += ["--lora", "2", "--batch-size", "2", "--new-word", "ring", "--no-samples", "--no-progress"]
    validation = ["--validation-prompt", "a red ring", "--validation-every", "2"] if validate else []
    return main([*argv, "--checkpoint-every", "2", *validation, *extra])


@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_encoder_gives_the_pipelines_own_conditioning(family):
    """What the loop feeds the U-Net is what the pipeline's ``encode_prompt`` (and SDXL's time ids) give."""
    from crossattn.training.latent import PromptEncoder

    pipe = build_family(family)
    tok = pipe.tokenizer
    ids = torch.tensor([tok("a red ring", padding="max_length", max_length=tok.model_max_length).input_ids])
    empty = torch.tensor([tok("", padding="max_length", max_length=tok.model_max_length).input_ids])
    towers = [pipe.text_encoder] + ([pipe.text_encoder_2] if family == "sdxl" else [])
    encoder = PromptEncoder(towers, [empty] * len(towers), (16, 16) if family == "sdxl" else None)
    with torch.no_grad():
        states, extra = encoder.encode_batch({"input_ids": ids, "input_ids_2": ids}, torch.tensor([False]))
        if family == "sd15":
            expected = pipe.encode_prompt("a red ring", "cpu", 1, False)[0]
            assert extra == {}
        else:
            expected, _, pooled, _ = pipe.encode_prompt("a red ring", device="cpu", do_classifier_free_guidance=False)
            time_ids = pipe._get_add_time_ids((16, 16), (0, 0), (16, 16), torch.float32, 16)
            torch.testing.assert_close(extra["added_cond_kwargs"]["text_embeds"], pooled)
            torch.testing.assert_close(extra["added_cond_kwargs"]["time_ids"], time_ids)
    torch.testing.assert_close(states, expected)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_finetune_validates_resumes_and_loads_everywhere(family, family_dirs, ring_data, tmp_path, monkeypatch):
    """~10 s: a 4-step run stopped at step 2 and resumed (``--resume latest``), LoRA + the new word on every CLIP tower with a
    validation every 2 steps; the adapter equals an uninterrupted run's; stock diffusers loads it (LoRA +
    ``load_textual_inversion``), and so does ``crossattn maps --lora --compare-base``."""
    from safetensors.torch import load_file

    from crossattn.training.train import Trainer

    model, out = family_dirs[family], tmp_path / "run"
    with monkeypatch.context() as patch:  # the stop of --time-limit, at step 2 of 4: checkpoint, final, exit
        patch.setattr(Trainer, "past", lambda self: self.state.step >= 2)
        assert finetune(ring_data, model, out, 4) == 0
    assert (
        json.loads((out / "checkpoints" / "step-000002" / "trainer_state.json").read_text())["train_state"]["step"] == 2
    )
    assert not (out / "checkpoints" / "step-000004").exists()
    assert finetune(ring_data, model, out, 4, "--resume", "latest") == 0
    validation = out / "validation"
    assert sorted(p.name for p in validation.glob("step-*")) == ["step-000002", "step-000004"]
    assert (validation / "step-000004" / "a-red-ring-0.compare.png").is_file()
    assert (validation / "base" / "a-red-ring-0.maps.safetensors").is_file()
    rows = json.loads((validation / "metrics.json").read_text())
    assert [r["step"] for r in rows if r["word"] == "ring"] == [0, 2, 4]
    assert all(0 <= r["moved"] <= 1 and 0.1 <= r["concentration"] <= 1 for r in rows)
    assert (validation / "metrics.png").is_file() and (validation / "metrics.csv").is_file()

    if family == "sd15":  # one family suffices for the loop's resume: the same weights as without the stop,
        straight = tmp_path / "straight"  # and without validation (it draws no number training uses)
        assert finetune(ring_data, model, straight, 4, validate=False) == 0
        assert not (straight / "validation").exists()
        a, b = (load_file(run / "final" / "pytorch_lora_weights.safetensors") for run in (out, straight))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    final = out / "final"
    card = (final / "README.md").read_text()
    assert "tags:\n- text-to-image" in card and "- lora" in card and "url: image_0.png" in card
    assert (final / "image_0.png").is_file()
    pipe = load_family(model)
    pipe.load_lora_weights(str(final))
    rows = load_file(final / "textual_inversion" / "ring.safetensors")
    towers = [(pipe.text_encoder, pipe.tokenizer)]
    if family == "sdxl":
        towers.append((pipe.text_encoder_2, pipe.tokenizer_2))
    assert sorted(rows) == sorted(["clip_l", "clip_g"][: len(towers)])
    for key, (encoder, tokenizer) in zip(("clip_l", "clip_g"), towers, strict=False):
        pipe.load_textual_inversion(rows[key], token="<ring>", text_encoder=encoder, tokenizer=tokenizer)
    image = pipe("a <ring>", num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (16, 16)

    maps = tmp_path / "maps"
    argv = ["maps", "a red ring", "--model", str(model), "--lora", str(out), "--compare-base", "--steps", "2"]
    assert main([*argv, "--out", str(maps), "--quiet"]) == 0
    numbers = json.loads((maps / "a-red-ring-0.compare.json").read_text())["words"]
    assert set(numbers) == {"a", "red", "ring"} and numbers["ring"]["moved"] > 0
    assert (maps / "a-red-ring-0.base.maps.safetensors").is_file() and (maps / "a-red-ring-0.compare.png").is_file()


def test_validation_numbers():
    """JS divergence: 0 for one map, 1 bit for disjoint ones, scale-free; concentration 0.1 for a flat map."""
    from crossattn.training.validation import js_divergence, top_share

    flat, left, right = torch.ones(10, 10), torch.zeros(10, 10), torch.zeros(10, 10)
    left[:, :5], right[:, 5:] = 1.0, 1.0
    assert js_divergence(left, 3 * left) == pytest.approx(0.0, abs=1e-12)
    assert js_divergence(left, right) == pytest.approx(1.0)
    assert 0 < js_divergence(left, flat) < 1
    assert top_share(flat) == pytest.approx(0.1)
    spot = torch.zeros(10, 10)
    spot[2, 3] = 5.0
    assert top_share(spot) == pytest.approx(1.0)


def test_compare_base_needs_a_lora(capsys):
    assert main(["maps", "a red ring", "--compare-base"]) != 0
    assert "--compare-base needs --lora" in capsys.readouterr().err


def same_items(a, b) -> bool:
    return [r.text for r in a.records] == [r.text for r in b.records] and np.array_equal(a.images, b.images)


DATASETS_COLUMNS = {"image_column": "pic", "caption_column": "caption"}


def write_layout(ring_data, folder, layout: str):
    """``ring_data`` in another layout DATA may take: ``csv`` (metadata.csv), ``txt`` (``0.png`` + ``0.txt``, no
    metadata file), or a local ``datasets`` folder (``save_to_disk`` or ``parquet``) with other column names
    (:data:`DATASETS_COLUMNS`). The table is built with pyarrow (images as ``{bytes, path}``, as ``datasets`` stores
    them) and given a fingerprint: ``Dataset.from_dict`` hashes with dill, which fails on pyarrow's ``MonthDayNano``
    in this environment."""
    import csv
    import shutil

    rows = [json.loads(line) for line in (ring_data / "metadata.jsonl").read_text().splitlines()]
    if layout in ("save_to_disk", "parquet"):
        datasets = pytest.importorskip("datasets")
        import pyarrow as pa
        import pyarrow.parquet as pq

        image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        pics = [{"bytes": (ring_data / r["file_name"]).read_bytes(), "path": None} for r in rows]
        table = pa.table({"pic": pa.array(pics, type=image_type), "caption": [r["text"] for r in rows]})
        if layout == "save_to_disk":
            features = datasets.Features({"pic": datasets.Image(), "caption": datasets.Value("string")})
            info = datasets.DatasetInfo(features=features)
            datasets.Dataset(table, info=info, fingerprint="rings").save_to_disk(str(folder))
        else:
            folder.mkdir()
            pq.write_table(table, folder / "train.parquet")
        return folder
    folder.mkdir()
    for row in rows:
        shutil.copy(ring_data / row["file_name"], folder / row["file_name"])
        if layout == "txt":
            (folder / row["file_name"]).with_suffix(".txt").write_text(row["text"] + "\n")
    if layout == "csv":
        with open(folder / "metadata.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, ["file_name", "text"])
            writer.writeheader()
            writer.writerows(rows)
    return folder


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("layout", ["csv", "txt", "save_to_disk", "parquet"])
def test_each_data_layout_fine_tunes_both_families(layout, family, ring_data, family_dirs, tmp_path):
    """DATA as metadata.csv, ``.txt`` captions beside the images, or a local ``datasets`` folder (``--image-column pic
    --caption-column caption``) reads as the metadata.jsonl folder does, and a 1-step run on each family writes the
    adapter (metadata.jsonl: the run test above)."""
    from crossattn.data.folder import ImageFolderDataset

    folder = write_layout(ring_data, tmp_path / layout, layout)
    columns = DATASETS_COLUMNS if layout in ("save_to_disk", "parquet") else {}
    assert same_items(ImageFolderDataset(folder, 16, **columns), ImageFolderDataset(ring_data, 16))
    if columns:
        with pytest.raises(ValueError, match="no column 'image'; its columns are: pic, caption"):
            ImageFolderDataset(folder, 16)
    argv = ["finetune", str(folder), "--model", str(family_dirs[family]), "--out", str(tmp_path / "run")]
    argv += ["--steps", "1", "--lora", "2", "--batch-size", "2", "--no-samples", "--no-progress"]
    argv += [f"--{k.replace('_', '-')}={v}" for k, v in columns.items()]  # --image-column=pic --caption-column=caption
    assert main(argv) == 0
    assert (tmp_path / "run" / "final" / "pytorch_lora_weights.safetensors").is_file()
