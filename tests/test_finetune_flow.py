"""Fine-tuning SD3 and Flux.1 folders (issue 39, part 1's last piece): the flow-matching loss is the one diffusers'
``train_dreambooth_lora_sd3.py`` / ``_flux.py`` compute, the conditioning is the pipelines' own, and a run with a
validation every step stops, resumes (``--resume latest``) to the uninterrupted run's adapter, loads in stock
diffusers (``load_lora_weights`` changes the transformer's output) and in ``crossattn maps --lora --compare-base``
(its base maps bit-equal to a plain ``maps`` run's).

The tiny Flux pipeline draws 256×256 by default (``FluxPipeline`` fixes ``default_sample_size`` at 128 latents): the
Flux run is made to train and draw at 32×32 (:func:`small_flux`), its tokens 256 → 16² fewer."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch
from PIL import Image

from crossattn.cli import main

from .family_pipelines import load_family
from .model_copies import bpe_copy
from .ring_images import ring_folder

pytest.importorskip("peft")

FAMILIES = ("sd3", "flux")
SIDE = {"sd3": 64, "flux": 32}  # the image side each tiny folder trains and draws at


@pytest.fixture(scope="module")
def flow_dirs(family_dir, tmp_path_factory):
    """The tiny SD3 and Flux folders (the session's, copied with BPE-file CLIP tokenizers: faster loading)."""
    root = tmp_path_factory.mktemp("flow")
    return {name: bpe_copy(family_dir(name), root / name) for name in FAMILIES}


@pytest.fixture(scope="module")
def rings(tmp_path_factory):
    """Four red rings captioned "a red ring" per training side (metadata.jsonl image folders)."""
    return {side: ring_folder(tmp_path_factory.mktemp(f"rings{side}"), side) for side in sorted(set(SIDE.values()))}


def small_flux(monkeypatch) -> None:
    """Flux at 32×32: ``FluxPipeline``'s default size 16 latents (its ``__init__`` sets 128) and the training side
    that follows it (``crossattn.training.latent.FLUX_SAMPLE_SIZE``)."""
    from diffusers import FluxPipeline

    init = FluxPipeline.__init__

    @functools.wraps(init)  # diffusers reads the signature for the components
    def small(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.default_sample_size = 16

    monkeypatch.setattr(FluxPipeline, "__init__", small)
    monkeypatch.setattr("crossattn.training.latent.FLUX_SAMPLE_SIZE", 16)


def batch_of(pipe, texts: list[str], side: int) -> dict:
    """A training batch as the loop collates it: random latents ``(B, C, side/2, side/2)`` and each tower's ids."""
    from crossattn.training.flow_matching import TowerCollate, flow_towers

    torch.manual_seed(1)
    channels = pipe.vae.config.latent_channels
    items = [{"latents": torch.randn(channels, side // 2, side // 2), "text": t} for t in texts]
    return TowerCollate(flow_towers(pipe))(items)


@pytest.mark.parametrize("family", ["sd3", "sd3-no-t5", "flux"])
def test_prompt_encoder_gives_the_pipelines_own_conditioning(family, tmp_path):
    """The states, pooled vectors (and Flux's text ids) the loop feeds the transformer are ``encode_prompt``'s."""
    from crossattn.training.flow_matching import T5_LENGTH, prompt_encoder

    from .family_pipelines import build_family

    pipe = build_family(family)
    texts = ["a red ring", "a blue square left of a green triangle"]
    batch = batch_of(pipe, texts, 8)
    length = T5_LENGTH[type(pipe).__name__]
    with torch.no_grad():
        states, extra = prompt_encoder(pipe, "cpu").encode_batch(batch, torch.tensor([False, False]))
        if family == "flux":
            expected, pooled, text_ids = pipe.encode_prompt(texts, texts, max_sequence_length=length)
            torch.testing.assert_close(extra["txt_ids"], text_ids, rtol=0, atol=0)
        else:
            expected, _, pooled, _ = pipe.encode_prompt(
                texts, texts, texts, do_classifier_free_guidance=False, max_sequence_length=length
            )
    torch.testing.assert_close(states, expected, rtol=0, atol=0)
    torch.testing.assert_close(extra["pooled_projections"], pooled, rtol=0, atol=0)


def script_loss(pipe, batch, texts, seed: int, scheme: str) -> torch.Tensor:
    """The loss of one batch as diffusers' ``train_dreambooth_lora_sd3.py`` / ``_flux.py`` compute it (no
    preconditioning), with the loop's draws in its order (caption dropout, noise, density) from one generator."""
    import copy

    from diffusers import FluxPipeline
    from diffusers.training_utils import compute_density_for_timestep_sampling, compute_loss_weighting_for_sd3

    from crossattn.training.flow_matching import T5_LENGTH

    noise_scheduler_copy = copy.deepcopy(pipe.scheduler)
    model_input = batch["latents"]
    g = torch.Generator().manual_seed(seed)
    torch.rand(model_input.shape[0], generator=g)  # the loop's caption-dropout draw (none dropped)
    noise = torch.randn(model_input.shape, generator=g)
    bsz = model_input.shape[0]
    u = compute_density_for_timestep_sampling(scheme, bsz, logit_mean=0.0, logit_std=1.0, mode_scale=1.29, generator=g)
    indices = (u * noise_scheduler_copy.config.num_train_timesteps).long()
    timesteps = noise_scheduler_copy.timesteps[indices]
    schedule_timesteps = noise_scheduler_copy.timesteps
    step_indices = [(schedule_timesteps == t).nonzero().item() for t in timesteps]  # the scripts' get_sigmas
    sigmas = noise_scheduler_copy.sigmas[step_indices].flatten()[:, None, None, None]
    noisy_model_input = (1.0 - sigmas) * model_input + sigmas * noise
    flux = isinstance(pipe, FluxPipeline)
    length = T5_LENGTH[type(pipe).__name__]
    if flux:
        prompt_embeds, pooled_prompt_embeds, text_ids = pipe.encode_prompt(texts, texts, max_sequence_length=length)
        b, c, h, w = model_input.shape
        model_pred = pipe.transformer(
            hidden_states=FluxPipeline._pack_latents(noisy_model_input, b, c, h, w),
            timestep=timesteps / 1000,
            guidance=torch.tensor([3.5]).expand(b)
            if pipe.transformer.config.guidance_embeds
            else None,  # --guidance_scale
            pooled_projections=pooled_prompt_embeds,
            encoder_hidden_states=prompt_embeds,
            txt_ids=text_ids,
            img_ids=FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, "cpu", torch.float32),
            return_dict=False,
        )[0]
        vae_scale_factor = pipe.vae_scale_factor
        model_pred = FluxPipeline._unpack_latents(
            model_pred, h * vae_scale_factor, w * vae_scale_factor, vae_scale_factor
        )
    else:
        prompt_embeds, _, pooled_prompt_embeds, _ = pipe.encode_prompt(
            texts, texts, texts, do_classifier_free_guidance=False, max_sequence_length=length
        )
        model_pred = pipe.transformer(
            hidden_states=noisy_model_input,
            timestep=timesteps,
            encoder_hidden_states=prompt_embeds,
            pooled_projections=pooled_prompt_embeds,
            return_dict=False,
        )[0]
    weighting = compute_loss_weighting_for_sd3(weighting_scheme=scheme, sigmas=sigmas)
    target = noise - model_input
    loss = torch.mean((weighting.float() * (model_pred.float() - target.float()) ** 2).reshape(target.shape[0], -1), 1)
    return loss.mean()


def flux_dev():
    """The tiny Flux pipeline with a guidance-distilled transformer (``guidance_embeds``, as Flux.1 [dev])."""
    from diffusers import FluxTransformer2DModel

    from .family_pipelines import build_family

    pipe = build_family("flux")
    torch.manual_seed(0)
    pipe.transformer = FluxTransformer2DModel.from_config({**pipe.transformer.config, "guidance_embeds": True})
    return pipe


@pytest.mark.parametrize("family", [*FAMILIES, "flux-dev"])
def test_loss_is_the_diffusers_scripts_flow_matching_loss(family):
    """At the same draws (one seeded generator), the loop's loss equals the scripts' hand-computed loss (Flux [dev]:
    with the scripts' training guidance 3.5); and the density is the scheme's (another scheme gives another loss)."""
    from crossattn.config import TrainingConfig
    from crossattn.training.flow_matching import (
        FAMILY_SETTINGS,
        FlowSettings,
        flow_matching_loss,
        noise_schedule,
        prompt_encoder,
    )

    from .family_pipelines import build_family

    pipe = flux_dev() if family == "flux-dev" else build_family(family)
    texts = ["a red ring", "a green square"]
    batch = batch_of(pipe, texts, 16)
    config = TrainingConfig(caption_dropout=0.0)
    settings = FAMILY_SETTINGS[type(pipe).__name__]
    assert settings.weighting_scheme == ("logit_normal" if family == "sd3" else "none")  # the scripts' defaults
    encoder = prompt_encoder(pipe, "cpu")
    with torch.no_grad():
        ours = flow_matching_loss(
            pipe.transformer, encoder, noise_schedule(pipe), batch, torch.Generator().manual_seed(7), config, settings
        )
        theirs = script_loss(pipe, batch, texts, 7, settings.weighting_scheme)
        other = FlowSettings("mode" if family == "sd3" else "logit_normal")
        moved = flow_matching_loss(
            pipe.transformer, encoder, noise_schedule(pipe), batch, torch.Generator().manual_seed(7), config, other
        )
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=0)
    assert not torch.equal(ours, moved)


def finetune(data, model, out, steps: int, *extra: str, validate: bool = True) -> int:
    """A rank-2 LoRA run, batch 2, lr 1e-2; with ``validate``, validation maps of "a red ring" every step."""
    argv = ["finetune", str(data), "--model", str(model), "--out", str(out), "--steps", str(steps), "--lr", "1e-2"]
    argv += ["--lora", "2", "--batch-size", "2", "--no-samples", "--no-progress", "--checkpoint-every", "1"]
    validation = ["--validation-prompt", "a red ring", "--validation-every", "1"] if validate else []
    return main([*argv, *validation, *extra])


def transformer_output(pipe, side: int) -> torch.Tensor:
    """The transformer's output for fixed inputs and a fixed prompt (what a LoRA changes)."""
    from crossattn.training.flow_matching import FlowSettings, denoise, prompt_encoder

    batch = batch_of(pipe, ["a red ring"], side)
    with torch.no_grad():
        states, extra = prompt_encoder(pipe, "cpu").encode_batch(batch, torch.tensor([False]))
        return denoise(pipe.transformer, batch["latents"], torch.tensor([500.0]), states, extra, FlowSettings())


@pytest.mark.parametrize("family", FAMILIES)
def test_flow_finetune_validates_resumes_and_loads_everywhere(family, flow_dirs, rings, tmp_path, monkeypatch):
    """A 3-step run stopped at step 2 and resumed equals an uninterrupted run without validation (the adapter's every
    tensor); validation maps at every step beside the base model's; stock ``load_lora_weights`` changes the
    transformer's output; ``maps --lora --compare-base``'s base maps and image equal a plain ``maps`` run's."""
    from safetensors.torch import load_file

    from crossattn.training.train import Trainer

    if family == "flux":
        small_flux(monkeypatch)
    model, out, data, side = flow_dirs[family], tmp_path / "run", rings[SIDE[family]], SIDE[family]
    with monkeypatch.context() as patch:  # the stop of --time-limit, at step 2 of 3: checkpoint, final, exit
        patch.setattr(Trainer, "past", lambda self: self.state.step >= 2)
        assert finetune(data, model, out, 3) == 0
    assert not (out / "checkpoints" / "step-000003").exists()
    assert finetune(data, model, out, 3, "--resume", "latest") == 0
    validation = out / "validation"
    assert sorted(p.name for p in validation.glob("step-*")) == ["step-000001", "step-000002", "step-000003"]
    assert (validation / "step-000003" / "a-red-ring-0.compare.png").is_file()
    rows = json.loads((validation / "metrics.json").read_text())
    assert [r["step"] for r in rows if r["word"] == "ring"] == [0, 1, 2, 3]
    assert rows[-1]["moved"] > 0 and (validation / "metrics.png").is_file()
    with Image.open(validation / "base" / "a-red-ring-0.png") as image:
        assert image.size == (side, side)

    straight = tmp_path / "straight"
    assert finetune(data, model, straight, 3, validate=False) == 0
    a, b = (load_file(run / "final" / "pytorch_lora_weights.safetensors") for run in (out, straight))
    assert a.keys() == b.keys() and all(k.startswith("transformer.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    info = json.loads((out / "final" / "lora_info.json").read_text())
    assert info["family"] in ("StableDiffusion3Pipeline", "FluxPipeline") and info["new_word_tokens"] == []
    card = (out / "final" / "README.md").read_text()
    assert f"- {family}\n" in card and "LoRA (peft) of the transformer's attention" in card

    pipe = load_family(model)
    before = transformer_output(pipe, side)
    pipe.load_lora_weights(str(out / "final"))
    assert not torch.allclose(transformer_output(pipe, side), before, atol=1e-5)

    argv = ["maps", "a red ring", "--model", str(model), "--steps", "2", "--quiet"]
    assert main([*argv, "--lora", str(out), "--compare-base", "--out", str(tmp_path / "maps")]) == 0
    assert main([*argv, "--out", str(tmp_path / "plain")]) == 0
    base, plain = (
        load_file(tmp_path / name)
        for name in ("maps/a-red-ring-0.base.maps.safetensors", "plain/a-red-ring-0.maps.safetensors")
    )
    assert base.keys() == plain.keys() and all(torch.equal(base[k], plain[k]) for k in base)
    with (
        Image.open(tmp_path / "maps" / "a-red-ring-0.base.png") as x,
        Image.open(tmp_path / "plain" / "a-red-ring-0.png") as y,
    ):
        assert np.array_equal(np.array(x), np.array(y))
    numbers = json.loads((tmp_path / "maps" / "a-red-ring-0.compare.json").read_text())["words"]
    assert set(numbers) == {"a", "red", "ring"} and numbers["ring"]["moved"] > 0


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--train-text-encoder", None), ("--new-word", "ring"), ("--lora-convs", None), ("--embedding-lr", "1e-3")],
)
def test_flags_that_do_not_apply_are_refused_by_name(flag, value, flow_dirs, rings, tmp_path, capsys):
    argv = [
        "finetune",
        str(rings[64]),
        "--model",
        str(flow_dirs["sd3"]),
        "--out",
        str(tmp_path / "run"),
        "--steps",
        "1",
    ]
    assert main([*argv, flag, *([value] if value else [])]) == 2
    err = capsys.readouterr().err
    assert f"{flag} is not supported on a StableDiffusion3Pipeline folder" in err and "--lora RANK" in err
    assert not (tmp_path / "run").exists()


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate keeps process-wide singletons (mixed precision among them): none before the test, none after."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


@pytest.mark.usefixtures("fresh_accelerate_state")
@pytest.mark.parametrize("family", FAMILIES)
def test_mixed_precision_holds_the_frozen_weights_in_it(family, flow_dirs, rings, tmp_path, monkeypatch):
    """``--mixed-precision bf16``: the transformer's own weights are held in bf16 (checkpoint), the adapter trains
    and is saved in float32, the loss stays finite (CPU autocast)."""
    from safetensors.torch import load_file

    if family == "flux":
        small_flux(monkeypatch)
    out = tmp_path / "run"
    assert finetune(rings[SIDE[family]], flow_dirs[family], out, 1, "--mixed-precision", "bf16", validate=False) == 0
    held = load_file(out / "checkpoints" / "step-000001" / "model.safetensors")
    assert {v.dtype for k, v in held.items() if "lora" not in k} == {torch.bfloat16}
    assert {v.dtype for k, v in held.items() if "lora" in k} == {torch.float32}
    assert {v.dtype for v in load_file(out / "final" / "pytorch_lora_weights.safetensors").values()} == {torch.float32}
    assert np.isfinite(json.loads((out / "log.jsonl").read_text().splitlines()[-1])["loss"])
