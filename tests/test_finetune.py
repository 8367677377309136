"""LoRA fine-tuning: parameter count, save/load round trip, only the adapter trains, CLI end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from crossattn.cli import main
from crossattn.models.loading import load_pipeline, placeholder_pipeline
from crossattn.training.lora import TEXT_TARGETS, UNET_TARGETS, add_lora, load_lora, lora_parameter_count, save_lora

from .conftest import generator, tiny_config
from .model_copies import bpe_copy

pytest.importorskip("peft")


def param_count(pipe) -> int:
    return sum(p.numel() for m in (pipe.unet, pipe.text_encoder) for p in m.parameters())


@pytest.mark.parametrize("rank", [1, 4])
def test_rank_r_adds_r_times_in_plus_out_per_projection(rank):
    pipe = placeholder_pipeline(tiny_config())
    before = param_count(pipe)
    expected = lora_parameter_count(pipe.unet, rank, UNET_TARGETS) + lora_parameter_count(
        pipe.text_encoder, rank, TEXT_TARGETS
    )
    add_lora(pipe, rank, text_encoder=True)
    trainable = sum(p.numel() for m in (pipe.unet, pipe.text_encoder) for p in m.parameters() if p.requires_grad)
    assert param_count(pipe) - before == expected == trainable
    # tiny config: attn1+attn2 in one down, one up (layers_per_block+1) and the mid block, 16 channels
    assert expected > 0


@pytest.mark.parametrize("convs", [False, True], ids=["attention", "attention+convs"])
def test_lora_save_load_gives_identical_samples(model_dir, tmp_path, convs):
    """Through diffusers' ``load_lora_weights``, also with the resnets' conv adapters (LoCon) at their own rank."""
    pipe = load_pipeline(model_dir)
    pipe.set_progress_bar_config(disable=True)
    base = pipe("a red ring", generator=generator(), num_inference_steps=3, output_type="pt").images
    add_lora(pipe, 4, text_encoder=True, convs=convs, conv_rank=3)
    ranks = {
        n.split(".lora_A")[0].rsplit(".", 1)[-1]: p.shape[0] for n, p in pipe.unet.named_parameters() if "lora_A" in n
    }
    assert ranks == ({"to_q": 4, "to_k": 4, "to_v": 4, "0": 4} | ({"conv1": 3, "conv2": 3} if convs else {}))
    with torch.no_grad():  # B starts at zero; give the adapter something to do
        for model in (pipe.unet, pipe.text_encoder):
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.1, generator=generator(1))
    adapted = pipe("a red ring", generator=generator(), num_inference_steps=3, output_type="pt").images
    save_lora(pipe, tmp_path / "lora")
    fresh = load_pipeline(model_dir)
    fresh.set_progress_bar_config(disable=True)
    load_lora(fresh, tmp_path / "lora")
    again = fresh("a red ring", generator=generator(), num_inference_steps=3, output_type="pt").images
    assert torch.equal(adapted, again)
    assert not torch.equal(adapted, base)


def test_load_lora_missing_weights(tiny_pipe, tmp_path):
    with pytest.raises(FileNotFoundError, match="pytorch_lora_weights.safetensors"):
        load_lora(tiny_pipe, tmp_path)


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny pipeline folder, its tokenizer as BPE files (:func:`model_copies.bpe_copy`); tests only read it."""
    return bpe_copy(tiny_model_dir, tmp_path_factory.mktemp("model") / "tiny")


def ring_folder(folder, n=4):
    folder.mkdir()
    rows = []
    for i in range(n):
        image = np.full((16, 16, 3), 255, np.uint8)
        image[4:12, 4:12] = (220, 50, 47)
        image[6:10, 6:10] = 255
        Image.fromarray(image).save(folder / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "text": "a red ring"})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def finetune_argv(model, data, out) -> list[str]:
    """A 3-step LoRA fine-tune of ``model`` on ``data`` into ``out``, with its before/after samples."""
    argv = ["finetune", str(data), "--model", str(model), "--out", str(out), "--steps", "3"]
    return [*argv, "--lora", "2", "--batch-size", "2", "--no-progress", "--lr", "1e-2"]


@pytest.fixture(scope="module")
def adapter_run(model_dir, tmp_path_factory):
    """``(argv, out)``: the run of :func:`finetune_argv` on four rings (made once; tests only read it)."""
    root = tmp_path_factory.mktemp("adapter")
    argv = finetune_argv(model_dir, ring_folder(root / "rings"), root / "run")
    assert main(argv) == 0
    return argv, root / "run"


def test_finetune_cli_trains_only_the_adapter(model_dir, adapter_run, tmp_path):
    from safetensors.torch import load_file

    argv, out = adapter_run
    weights = load_file(out / "final" / "pytorch_lora_weights.safetensors")
    b_norm = sum(v.abs().sum().item() for k, v in weights.items() if "lora_B" in k)
    assert b_norm > 0, "the adapter's B matrices start at zero and must have moved"
    assert (out / "samples" / "before.png").is_file()
    assert json.loads((out / "final" / "lora_info.json").read_text())["rank"] == 2
    assert main(argv) == 2  # refuses to overwrite the run
    images = tmp_path / "images"
    gen = ["generate", "a red ring", "--model", str(model_dir), "--lora", str(out / "final"), "--steps", "2"]
    assert main([*gen, "--out", str(images)]) == 0
    meta = json.loads((images / "a-red-ring-0-0.json").read_text())
    assert meta["model"]["lora"]["path"] == str(out / "final") and len(meta["model"]["lora"]["hash"]) == 16
    assert main([*gen[:5], str(tmp_path), "--out", str(tmp_path / "x")]) == 2  # not a LoRA folder


def test_finetune_bad_folder_is_one_clear_error(model_dir, tmp_path, capsys):
    data = ring_folder(tmp_path / "rings")
    (data / "metadata.jsonl").write_text('{"file_name": "missing.png", "text": "a red ring"}\n')
    argv = ["finetune", str(data), "--model", str(model_dir), "--out", str(tmp_path / "o"), "--steps", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "missing.png" in err and "0.png" in err and "--skip-bad" in err


def test_training_moves_the_adapter_and_not_the_frozen_base(model_dir, tmp_path):
    """train() with LoRA: at export, every base weight equals the folder's and lora_B has moved."""
    from crossattn.commands.train import model_config_from_folder
    from crossattn.config import TrainingConfig
    from crossattn.data.folder import ImageFolderDataset
    from crossattn.training.train import train

    data = ImageFolderDataset(ring_folder(tmp_path / "rings"), resolution=16)
    base = {k: v.clone() for k, v in load_pipeline(model_dir).unet.state_dict().items()}
    config = TrainingConfig(
        steps=3,
        batch_size=2,
        learning_rate=1e-2,
        warmup_steps=0,
        init_from=str(model_dir),
        data=str(tmp_path / "rings"),
        sample_every=0,
        train_text_encoder=False,
        ema_decay=0,
    )
    seen = {}

    def export(pipe, folder):
        seen.update({k: v.clone() for k, v in pipe.unet.state_dict().items()})

    train(
        model_config_from_folder(model_dir),
        config,
        data,
        tmp_path / "run",
        progress=False,
        customize=lambda pipe: add_lora(pipe, 2),
        export=export,
    )
    lora_b = [v for k, v in seen.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)
    frozen = {k.replace(".base_layer", ""): v for k, v in seen.items() if "lora_" not in k}
    assert set(frozen) == set(base)
    for name, value in base.items():
        assert torch.equal(frozen[name], value), name


def moved_embedding_rows(model_dir, tmp_path, embedding_lr):
    """How far the rows of the caption's words ("a red ring") and of an unused word move in a
    3-step full fine-tune with the text encoder at LR 1e-4 and the given embedding LR."""
    from crossattn.commands.train import model_config_from_folder
    from crossattn.config import TrainingConfig
    from crossattn.data.folder import ImageFolderDataset
    from crossattn.training.train import train

    pipe = load_pipeline(model_dir)
    ids = pipe.tokenizer(["ring", "zebra"], add_special_tokens=False).input_ids
    ring, zebra = ids[0][0], ids[1][0]
    before = pipe.text_encoder.get_input_embeddings().weight.detach().clone()
    folder = tmp_path / f"rings-{embedding_lr}"
    config = TrainingConfig(
        steps=3,
        batch_size=2,
        learning_rate=1e-4,
        embedding_lr=embedding_lr,
        warmup_steps=0,
        weight_decay=0.0,
        init_from=str(model_dir),
        data=str(folder),
        sample_every=0,
        caption_dropout=0.0,
        ema_decay=0,
    )
    seen = {}
    train(
        model_config_from_folder(model_dir),
        config,
        ImageFolderDataset(ring_folder(folder), resolution=16),
        tmp_path / f"run-{embedding_lr}",
        progress=False,
        export=lambda pipe, _: seen.update(table=pipe.text_encoder.get_input_embeddings().weight.detach().clone()),
    )
    moved = (seen["table"] - before).norm(dim=-1)  # (vocab,)
    return moved[ring].item(), moved[zebra].item()


def test_embedding_lr_moves_the_caption_words_rows_faster(model_dir, tmp_path):
    slow_ring, slow_zebra = moved_embedding_rows(model_dir, tmp_path, None)
    fast_ring, fast_zebra = moved_embedding_rows(model_dir, tmp_path, 1e-2)
    assert slow_ring > 0 and fast_ring > 20 * slow_ring  # Adam steps scale with the group's LR (100x here)
    assert slow_zebra == fast_zebra == 0.0  # a word no caption uses gets no update (no weight decay)


def test_embedding_lr_with_full_needs_text_encoder_training(model_dir, tmp_path, capsys):
    data = ring_folder(tmp_path / "rings")
    argv = ["finetune", str(data), "--model", str(model_dir), "--out", str(tmp_path / "o"), "--steps", "1"]
    assert main([*argv, "--full", "--embedding-lr", "5e-3"]) == 2
    assert "--embedding-lr 0.005 with --full needs --train-text-encoder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_lora_trains_the_new_words_rows_and_they_load_back(model_dir, tmp_path):
    """A caption word outside the base model's vocabulary ("ring"): LoRA mode trains its embedding row
    (and no other), saves it beside the adapter keyed by token, and ``load_lora`` restores the text states."""
    from safetensors.torch import load_file

    from crossattn.training.lora import TOKENS_NAME

    base = bpe_copy(model_dir, tmp_path / "base", grammar=True)  # circle, square, triangle: no ring
    out = tmp_path / "o"
    argv = ["finetune", str(ring_folder(tmp_path / "rings")), "--model", str(base), "--out", str(out)]
    assert main([*argv, "--steps", "3", "--batch-size", "2", "--lora", "2", "--no-samples", "--no-progress"]) == 0
    rows = load_file(str(out / "final" / TOKENS_NAME))
    assert list(rows) == ["ring</w>"]
    base_pipe, tuned = load_pipeline(base), load_pipeline(base)
    load_lora(tuned, out / "final")
    before = base_pipe.text_encoder.get_input_embeddings().weight
    after = tuned.text_encoder.get_input_embeddings().weight
    ring = base_pipe.tokenizer.convert_tokens_to_ids("ring</w>")
    changed = (before != after).any(dim=1).nonzero().flatten().tolist()
    assert changed == [ring] and torch.equal(after[ring], rows["ring</w>"])
    info = json.loads((out / "final" / "lora_info.json").read_text())
    assert info["new_word_tokens"] == [ring]
    # --no-new-words (no rows file) is checked on test_prior's run with --prior 0 on this same base and data


def test_lora_and_full_defaults_differ_and_flags_override_them():
    """LoRA: rank 16 with LoCon (on crossattn models; SD-1.5 / SDXL LoRAs adapt attention only), 1,200 steps
    of 4 at 1e-3 (the new-word recipe); --full keeps 300 of 16 at 5e-5."""
    from crossattn.cli import build_parser
    from crossattn.commands.finetune import customizer, training_config

    parse = build_parser().parse_args
    lora = parse(["finetune", "data"])
    config = training_config(lora, None, ())
    assert lora.lora_conv_rank == 16
    assert (customizer(lora, None)[1], customizer(lora, "StableDiffusionPipeline")[1]) == (True, False)
    assert (lora.lora, config.steps, config.batch_size, config.learning_rate) == (
        16,
        1200,
        4,
        1e-3,
    )
    full = training_config(parse(["finetune", "data", "--full"]), None, ())
    assert (full.steps, full.batch_size, full.learning_rate) == (300, 16, 5e-5)
    own = parse(["finetune", "data", "--no-lora-convs", "--steps", "7", "--batch-size", "3", "--lr", "2e-3"])
    config = training_config(own, None, ())
    assert (own.lora_convs, config.steps, config.batch_size, config.learning_rate) == (False, 7, 3, 2e-3)


def test_loading_a_unet_only_adapter_says_nothing_about_the_text_encoder(model_dir, tmp_path, capfd):
    """diffusers warns "No LoRA keys associated to CLIPTextModel" for an adapter without text-encoder
    keys; ours have none by default, so load_lora drops that one message and restores the logger."""
    import logging

    pipe = load_pipeline(model_dir)
    add_lora(pipe, 2)
    save_lora(pipe, tmp_path / "lora")
    capfd.readouterr()
    load_lora(load_pipeline(model_dir), tmp_path / "lora")
    assert "No LoRA keys" not in capfd.readouterr().err
    from crossattn.models.lora_files import _NoTextEncoderKeys

    filters = logging.getLogger("diffusers.loaders.lora_base").filters
    assert not any(isinstance(f, _NoTextEncoderKeys) for f in filters)


def test_two_finetunes_with_one_seed_give_one_adapter(model_dir, adapter_run, tmp_path):
    """The adapters' random init is drawn from --seed (peft draws it from the global RNG), so a run
    repeats bit for bit; before, two identical runs differed by 0.4 in lora_A."""
    from safetensors.torch import load_file

    argv, first = adapter_run
    torch.rand(5)  # the global RNG moved on since the first run, as it would in a notebook
    again = finetune_argv(model_dir, ring_folder(tmp_path / "rings"), tmp_path / "again")
    assert main(again) == 0
    weights = [load_file(run / "final" / "pytorch_lora_weights.safetensors") for run in (first, tmp_path / "again")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
