"""Prior preservation and text-encoder LoRA on SD-1.5 / SDXL folders (issue 39): the base pipeline draws
``--class-prompt`` into ``OUT/prior`` (reused on ``--resume``), the prior images train beside DATA with
``--prior-loss-weight``; ``--train-text-encoder`` adapts both of SDXL's CLIP towers, stock diffusers loads them,
and ``--compare-base`` draws the base model with both towers restored."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from crossattn.cli import main

from . import test_finetune_families as families
from . import test_kill_resume
from .family_pipelines import load_family

pytest.importorskip("peft")
CLASS_PROMPT = "a photo of a ring"
FAMILIES = families.FAMILIES
# the module fixtures this file shares: the tiny SD-1.5 / SDXL folders, four ring images, the fork server killed
# runs come from (each set up once for this module too)
family_dirs, ring_data, fork_server = families.family_dirs, families.ring_data, test_kill_resume.fork_server


def argv(data, model, out, steps: int, *extra: str) -> list[str]:
    """A tiny LoRA run: rank 2, batch 2, no sample grids."""
    common = ["--steps", str(steps), "--lora", "2", "--batch-size", "2", "--no-samples", "--no-progress"]
    return ["finetune", str(data), "--model", str(model), "--out", str(out), *common, *extra]


def test_family_prior_flags_name_what_is_missing(family_dirs, ring_data, tmp_path, capsys):
    """Refused before anything is drawn or written: a prior without class words, class words with ``--prior 0``,
    a weight for no prior images, a negative weight."""
    out = tmp_path / "run"
    cases = [
        (["--prior", "2"], "--prior 2 on a StableDiffusionPipeline folder needs --class-prompt P"),
        (["--class-prompt", CLASS_PROMPT, "--prior", "0"], "with --prior 0 draws nothing"),
        (["--prior-loss-weight", "0.5"], "this run has none"),
        (["--class-prompt", CLASS_PROMPT, "--prior-loss-weight", "-1"], "finite number >= 0, got -1.0"),
    ]
    for extra, message in cases:
        assert main(argv(ring_data, family_dirs["sd15"], out, 1, *extra)) == 2
        assert message in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("family", FAMILIES)
def test_family_prior_is_the_base_pipelines_drawing_weighted_and_reused(
    family, family_dirs, ring_data, tmp_path, monkeypatch
):
    """A 4-step run with 2 prior images (weight 0.5) stopped at step 2 and resumed: the prior images are what the
    base pipeline draws of the class prompt (20 steps, guidance 4, seeds 3,000,000 + i, at the 16 px training
    side), encoded with DATA through the VAE and seen with weight 0.5 (DATA's 1); the resumed run draws nothing."""
    import crossattn.training.prior as prior
    from crossattn.training.train import Trainer

    model, out = family_dirs[family], tmp_path / "run"
    seen: list[torch.Tensor] = []
    compute_loss = Trainer.compute_loss

    def recording(self, batch, generator):
        assert [w for w in self.dataset.weights] == [None] * 4 + [0.5] * 2  # DATA's 4 latents, then the prior's 2
        seen.append(batch["loss_weights"].cpu() if "loss_weights" in batch else torch.ones(2))
        return compute_loss(self, batch, generator)

    monkeypatch.setattr(Trainer, "compute_loss", recording)
    run = argv(ring_data, model, out, 4, "--prior", "2", "--class-prompt", CLASS_PROMPT, "--prior-loss-weight", "0.5")
    with monkeypatch.context() as patch:  # the stop of --time-limit, at step 2 of 4
        patch.setattr(Trainer, "past", lambda self: self.state.step >= 2)
        assert main(run) == 0
    folder = out / "prior"
    lines = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    assert [line["text"] for line in lines] == [CLASS_PROMPT] * 2
    info = json.loads((folder / prior.INFO_NAME).read_text())
    drawn_with = {"count": 2, "base_model": str(model), "seed": 0, "steps": 20, "guidance": 4.0}
    assert info == drawn_with | {"class_prompt": CLASS_PROMPT, "size": 16}
    pipe = load_family(model).to(prior.prior_device() or "cpu")  # drawn where the prior is drawn
    gens = [torch.Generator().manual_seed(prior.IMAGE_SEED_BASE + i) for i in range(2)]
    call = dict(num_inference_steps=20, guidance_scale=4.0, height=16, width=16, output_type="np")
    drawn = (pipe([CLASS_PROMPT] * 2, generator=gens, **call).images * 255).round().astype(np.uint8)  # (2, 16, 16, 3)
    for line, image in zip(lines, drawn, strict=True):
        assert np.array_equal(np.asarray(Image.open(folder / line["file_name"])), image)

    def no_drawing(*args, **kwargs):
        raise AssertionError("drew the prior images again")

    monkeypatch.setattr(prior, "draw_prior", no_drawing)
    assert main([*run, "--resume", "latest"]) == 0
    weights = torch.cat(seen)  # (4 steps × 2,): the first epoch (3 steps) holds all 6 items
    assert len(seen) == 4 and set(weights.tolist()) == {1.0, 0.5} and weights[:6].eq(0.5).sum() == 2
    lora = json.loads((out / "final" / "lora_info.json").read_text())
    assert (lora["prior_images"], lora["class_prompt"], lora["prior_loss_weight"]) == (2, CLASS_PROMPT, 0.5)
    assert "2 prior images" in (out / "final" / "README.md").read_text()


def test_class_prompt_gives_a_crossattn_model_without_the_grammar_a_prior(tiny_model_dir, ring_data, tmp_path):
    """A crossattn model whose words are not the scenes grammar draws no prior of its own; ``--class-prompt`` names
    what it draws (at its own size: ``prior_info.json`` has no ``size``)."""
    from crossattn.training.prior import INFO_NAME

    from .model_copies import bpe_copy

    model, out = bpe_copy(tiny_model_dir, tmp_path / "base"), tmp_path / "run"
    assert main(argv(ring_data, model, out, 1, "--class-prompt", "a red circle", "--prior", "2")) == 0
    lines = (out / "prior" / "metadata.jsonl").read_text().splitlines()
    assert [json.loads(line)["text"] for line in lines] == ["a red circle"] * 2
    info = json.loads((out / "prior" / INFO_NAME).read_text())
    assert info["class_prompt"] == "a red circle" and "size" not in info
    assert json.loads((out / "final" / "lora_info.json").read_text())["prior_images"] == 2


def test_prior_loss_weight_scales_each_items_loss(tiny_pipe):
    """``loss_weights`` multiply the per-item losses before the batch mean: all 1 is bit-identical to no weights,
    and the loss is linear in them (so weight 0 drops an item)."""
    from crossattn.config import TrainingConfig
    from crossattn.models.model import make_scheduler
    from crossattn.training.batching import CaptionCollate
    from crossattn.training.losses import diffusion_loss

    tok, config = tiny_pipe.tokenizer, TrainingConfig(caption_dropout=0.0)
    scheduler = make_scheduler("ddpm", dict(tiny_pipe.scheduler.config))
    pixels = torch.linspace(-1, 1, 2 * 3 * 16 * 16).reshape(2, 3, 16, 16)  # (B, 3, H, W)
    items = [{"pixel_values": p, "text": "a red ring"} for p in pixels]
    empty = torch.tensor(tok("", padding="max_length", max_length=tok.model_max_length).input_ids)[None]  # (1, T)

    def loss(weights=None) -> float:
        tagged = items if weights is None else [{**it, "loss_weight": w} for it, w in zip(items, weights, strict=True)]
        batch = CaptionCollate(tok, tok.model_max_length)(tagged)
        with torch.no_grad():
            args = (tiny_pipe.unet, tiny_pipe.text_encoder, scheduler, batch, torch.Generator().manual_seed(0))
            return diffusion_loss(*args, config, empty).item()

    assert loss([1.0, 1.0]) == loss()
    assert loss([2.0, 2.0]) == pytest.approx(2 * loss())
    assert loss([1.0, 0.0]) + loss([0.0, 1.0]) == pytest.approx(loss())
    assert loss([1.0, 0.0]) != pytest.approx(loss([0.0, 1.0]))


def encoder_states(pipe) -> list[torch.Tensor]:
    """Every CLIP tower's last hidden states of "a red ring" (after every adapted layer), then their embedding
    tables."""
    towers = [e for e in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if e is not None]
    ids = pipe.tokenizer("a red ring", padding="max_length", max_length=16, return_tensors="pt").input_ids  # (1, T)
    with torch.no_grad():
        states = [e(ids).last_hidden_state for e in towers]  # (1, T, D) each
    return states + [e.get_input_embeddings().weight.detach().clone() for e in towers]


@pytest.mark.parametrize("family", FAMILIES)
def test_text_encoder_lora_on_every_tower(family, family_dirs, ring_data, tmp_path):
    """``--train-text-encoder``: LoRA on every CLIP tower (SDXL: both), saved under ``text_encoder.`` (and
    ``text_encoder_2.``) keys; stock diffusers' ``load_lora_weights`` changes each tower's states; crossattn's
    ``lora_disabled`` gives each back exactly (the new word's rows too) and the LoRA's after; ``maps --lora
    --compare-base`` draws the base maps a plain ``maps`` run of the base draws, bit for bit. ~4 s CPU for SDXL
    cold (the first ``maps`` imports; warm, its two ``maps`` runs take 0.8 + 1.8 s)."""
    from safetensors.torch import load_file

    from crossattn.sampling import ModelRef
    from crossattn.sampling.compare import lora_disabled

    model, out = family_dirs[family], tmp_path / "run"
    assert main(argv(ring_data, model, out, 2, "--train-text-encoder", "--new-word", "ring", "--lr", "1e-2")) == 0
    keys = load_file(out / "final" / "pytorch_lora_weights.safetensors")
    towers = ["text_encoder", "text_encoder_2"][: 2 if family == "sdxl" else 1]
    assert {k.split(".")[0] for k in keys} == {"unet", *towers}
    base = encoder_states(load_family(model))
    stock = load_family(model)
    stock.load_lora_weights(str(out / "final"))
    for tuned, plain in zip(encoder_states(stock)[: len(towers)], base, strict=False):
        assert not torch.allclose(tuned, plain)  # the LoRA moved every tower

    pipe = ModelRef.resolve(model, out).load()
    tuned = encoder_states(pipe)
    assert not any(torch.equal(t, b) for t, b in zip(tuned, base, strict=True))  # adapters and the ring rows
    with lora_disabled(pipe):
        assert all(torch.equal(t, b) for t, b in zip(encoder_states(pipe), base, strict=True))
    assert all(torch.equal(t, b) for t, b in zip(encoder_states(pipe), tuned, strict=True))

    maps = ["maps", "a red ring", "--model", str(model), "--steps", "2", "--quiet"]
    assert main([*maps, "--out", str(tmp_path / "base")]) == 0
    assert main([*maps, "--lora", str(out), "--compare-base", "--out", str(tmp_path / "cmp")]) == 0
    plain = load_file(tmp_path / "base" / "a-red-ring-0.maps.safetensors")
    compared = load_file(tmp_path / "cmp" / "a-red-ring-0.base.maps.safetensors")
    assert plain.keys() == compared.keys() and all(torch.equal(plain[k], compared[k]) for k in plain)
    png = (tmp_path / "base" / "a-red-ring-0.png", tmp_path / "cmp" / "a-red-ring-0.base.png")
    assert np.array_equal(*(np.asarray(Image.open(p)) for p in png))
    numbers = json.loads((tmp_path / "cmp" / "a-red-ring-0.compare.json").read_text())["words"]
    assert numbers["ring"]["moved"] > 0


@pytest.mark.slow
def test_sigkilled_sdxl_run_resumes_to_the_uninterrupted_weights(fork_server, family_dirs, ring_data, tmp_path):
    """A real SIGKILL (``test_kill_resume``'s fork server) while an SDXL run with everything on (prior images of a
    class prompt, LoRA on the U-Net and both text towers, a new word, validation maps every step) writes its second
    checkpoint; ``--resume latest`` ends with the uninterrupted run's weights bit for bit, and the validation
    numbers hold one row per step and word."""
    from crossattn.training.runs import RunDir

    extra = ["--prior", "2", "--class-prompt", CLASS_PROMPT, "--train-text-encoder", "--new-word", "ring"]
    extra += [
        "--validation-prompt",
        "a red ring",
        "--validation-every",
        "1",
        "--checkpoint-every",
        "1",
        "--threads",
        "1",
    ]

    def run(out):
        return argv(ring_data, family_dirs["sdxl"], out, 3, *extra)

    out = tmp_path / "killed"
    test_kill_resume.kill_when(
        fork_server, run(out), lambda: test_kill_resume.mid_checkpoint(RunDir(out)), tmp_path / "stderr.txt"
    )
    assert not (out / "final").exists()
    assert main([*run(out), "--resume", "latest"]) == 0
    assert main(run(tmp_path / "whole")) == 0
    test_kill_resume.assert_bit_identical(tmp_path / "whole", out)
    rows = json.loads((out / "validation" / "metrics.json").read_text())
    assert [r["step"] for r in rows if r["word"] == "ring"] == [0, 1, 2, 3]
