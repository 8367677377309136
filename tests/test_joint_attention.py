"""``trace`` on joint-attention transformers (SD3, Flux): what is recorded, that the image is unchanged, the words per
encoder, flat memory; tiny random pipelines from ``family_pipelines``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crossattn.attention import joint
from crossattn.attention.joint import FluxCaptureProcessor, SD3CaptureProcessor
from crossattn.attention.trace import trace

from .family_pipelines import PROMPTS, build_family, sample

JOINT = ("sd3", "sd3-no-t5", "flux")


@pytest.fixture(scope="module")
def pipes():
    return {name: build_family(name) for name in JOINT}


def traced(pipe, **kwargs):
    """The images and the maps of one traced sampling of :data:`PROMPTS` at 64×96 (batch of 2)."""
    with trace(pipe, **kwargs) as tracer:
        images = sample(pipe)
    return images, tracer.maps()


@pytest.mark.parametrize("name", JOINT)
def test_tracing_leaves_the_images_bit_identical(pipes, name):
    pipe = pipes[name]
    before = dict(pipe.transformer.attn_processors)
    plain = sample(pipe)
    images, _ = traced(pipe, kind="both")
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(plain, images, strict=True))
    assert all(pipe.transformer.attn_processors[k] is p for k, p in before.items())  # the very same objects back


@pytest.mark.parametrize("name", JOINT)
def test_word_maps_have_the_image_shape_and_the_prompt_words_per_encoder(pipes, name):
    _, maps = traced(pipes[name])
    assert maps.image_size == (64, 96) and maps.num_images == 2 and maps.halves == ["cond", "cond"]
    expected = {"sd3": ["clip", "t5"], "sd3-no-t5": ["clip", "none"], "flux": ["t5"]}[name]
    assert maps.encoders == expected
    for image, prompt in enumerate(PROMPTS):
        assert maps.words_for(image) == prompt.split()
        for encoder in (e for e in expected if e != "none"):
            assert maps.words_for(image, encoder) == prompt.split()  # sub-word pieces merged ("triangle")
        for word in prompt.split():
            heat = maps.word_map(word, image)
            assert heat.shape == (64, 96) and torch.isfinite(heat).all() and (heat >= 0).all()


def test_t5_pieces_of_one_word_are_merged(pipes):
    _, maps = traced(pipes["flux"])
    tokens = maps.tokens_for(1)
    assert [t for t in tokens if t.startswith("▁t") or t in ("ri", "ang", "le")][:2] != ["▁triangle"]  # split
    assert "triangle" in maps.words_for(1, "t5")


@pytest.mark.parametrize("name", ["sd3", "flux"])
def test_blocks_are_the_joint_softmax_over_all_keys(pipes, name):
    """Image→text plus image→image rows sum to 1 (normalised over every key), per head; the kernel's log-sum-exp
    gives the same probabilities as an explicit one."""
    _, maps = traced(pipes[name], kind="both", per_head=True)
    for text in maps.cross_layers:
        image = text.removesuffix(".text") + ".image"
        total = maps.tensors[text].sum(-1) + maps.tensors[image].sum(-1)  # (S, R, heads, N)
        assert torch.allclose(total, torch.ones_like(total), atol=1e-5)
    explicit = pytest.MonkeyPatch()
    explicit.setattr(
        joint, "fused_attention", lambda q, k, v: (torch.nn.functional.scaled_dot_product_attention(q, k, v), None)
    )
    try:
        _, again = traced(pipes[name], kind="both", per_head=True)
    finally:
        explicit.undo()
    for layer in maps.layer_names:
        assert torch.allclose(maps.tensors[layer], again.tensors[layer], atol=1e-6)


def test_flux_double_and_single_stream_blocks_are_both_recorded(pipes):
    _, maps = traced(pipes["flux"], kind="both")
    assert maps.cross_layers == ["transformer_blocks.0.attn.text", "single_transformer_blocks.0.attn.text"]
    assert maps.self_layers == ["transformer_blocks.0.attn.image", "single_transformer_blocks.0.attn.image"]
    text = maps.tensors["single_transformer_blocks.0.attn.text"]  # (1, R, 1, N, T): 16 T5 tokens
    assert text.shape[-2:] == (16 * 24, 16)  # 32×48 latents packed 2×2 into 16×24 tokens


def test_only_the_chosen_modules_get_a_capture_processor(pipes):
    pipe = pipes["flux"]
    before = dict(pipe.transformer.attn_processors)
    with trace(pipe, layers="single*"):
        during = pipe.transformer.attn_processors
        assert isinstance(during["single_transformer_blocks.0.attn.processor"], FluxCaptureProcessor)
        assert during["transformer_blocks.0.attn.processor"] is before["transformer_blocks.0.attn.processor"]
    sd3 = pipes["sd3"]
    with trace(sd3, layers=r"blocks\.1\.") as tracer:
        assert isinstance(sd3.transformer.attn_processors["transformer_blocks.1.attn.processor"], SD3CaptureProcessor)
        sample(sd3)
    assert tracer.maps().layer_names == ["transformer_blocks.1.attn.text"]


def test_a_processor_it_cannot_stand_in_for_is_refused_before_anything_changes(pipes):
    from diffusers.models.attention_processor import AttnProcessor2_0

    pipe = build_family("sd3")
    pipe.transformer.set_attn_processor(AttnProcessor2_0())
    with pytest.raises(ValueError, match="uses AttnProcessor2_0; tracing stands in for JointAttnProcessor2_0"):
        trace(pipe).__enter__()
    assert all(type(p) is AttnProcessor2_0 for p in pipe.transformer.attn_processors.values())


@pytest.mark.parametrize("name", ["sd15", "sdxl", "sd3", "flux"])
def test_capture_memory_does_not_grow_with_the_steps(pipes, name):
    pipe = pipes[name] if name in pipes else build_family(name)
    size = {"height": 16, "width": 16} if name in ("sd15", "sdxl") else {}
    held = []
    for steps in (2, 8):  # four times the steps: a store that kept every step would hold four times the bytes
        with trace(pipe) as tracer:
            sample(pipe, ["a red circle"], steps=steps, output_type="latent", **size)
        held.append(tracer.nbytes())
    assert held[0] == held[1] > 0


def test_a_bare_transformer_is_traced_as_a_pipeline_is(pipes):
    """``trace(pipe.transformer)``: the same maps, tokens unknown (no tokenizer), prompts told by ``start_call``."""
    pipe = pipes["sd3"]
    _, whole = traced(pipe)
    with trace(pipe.transformer) as tracer:
        tracer.start_call(PROMPTS)
        sample(pipe)
    bare = tracer.maps()
    assert bare.layer_names == whole.layer_names and bare.tokens_for(0)[0] == "<0>"
    for layer in whole.layer_names:
        assert torch.equal(bare.tensors[layer], whole.tensors[layer])


def test_memory_holds_only_what_is_asked_for(pipes):
    """One module's layers hold a quarter of the four (Flux: 2 modules × cross/self); per-step detail only when asked."""
    pipe = pipes["flux"]
    held = {}
    for name, kwargs in {"all": {"kind": "both"}, "single": {"kind": "both", "layers": "single*"}}.items():
        with trace(pipe, **kwargs) as tracer:
            sample(pipe, ["a red circle"])
        held[name] = tracer.nbytes()
    assert held["single"] * 2 == held["all"]
    with trace(pipe, per_step=True) as tracer:
        sample(pipe, ["a red circle"], steps=3)
    with trace(pipe) as plain:
        sample(pipe, ["a red circle"], steps=3)
    assert tracer.nbytes() == 3 * plain.nbytes()


def test_explorer_word_shares_on_a_joint_model_are_renormalised_over_the_text(pipes):
    """Issue 38: the image keeps most of a joint softmax, so the words' raw probabilities showed as 0 %; the bars are
    their shares of the pixel's attention to text, and the label says so with the text's share of the whole."""
    from crossattn.web import render

    _, maps = traced(pipes["flux"])
    raw = float(maps.word_map("circle", 0)[10, 20])
    reads = render.pixel_words(maps, 20, 10)
    text = float(render.text_share(maps)[10, 20])
    assert sum(reads.values()) == pytest.approx(1.0, abs=1e-4) and render.IMAGE_TOKENS not in reads
    assert reads["circle"] == pytest.approx(raw / text, rel=1e-5) and reads["circle"] > raw
    label = render.reads_label(maps, 20, 10)
    assert "shares of its attention to text" in label and f"text {text:.1%}" in label


@pytest.mark.parametrize("name", ["sd15", "flux"])
def test_a_lora_on_the_attention_still_applies_under_the_trace(name):
    """Issue 38: a peft LoRA on the attention projections (``add_adapter``) changes the image, and the traced image is
    the untraced one, bit for bit: the capture processors call the wrapped ``to_q``/``to_k``/``to_v``/``to_out``."""
    from peft import LoraConfig

    pipe = build_family(name)
    plain = sample(pipe, ["a red circle"])
    denoiser = pipe.unet if name == "sd15" else pipe.transformer
    torch.manual_seed(1)  # init_lora_weights=False: A and B random, so the adapter is not a no-op at the start
    denoiser.add_adapter(
        LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v"], init_lora_weights=False)
    )
    lora = sample(pipe, ["a red circle"])
    with trace(pipe, kind="both") as tracer:
        lora_traced = sample(pipe, ["a red circle"])
    assert not np.array_equal(np.asarray(plain[0]), np.asarray(lora[0]))  # the LoRA draws another image
    assert np.array_equal(np.asarray(lora[0]), np.asarray(lora_traced[0]))  # and the trace does not undo it
    assert tracer.maps().layer_names


def test_flux_true_cfg_keeps_the_negative_pass_apart(pipes):
    """Issue 38: Flux with ``true_cfg_scale > 1`` calls the transformer twice a step (prompt, then negative prompt).
    The prompt's maps are the first calls' only: with one step they equal the maps of the same sampling without true
    CFG (the first call sees the same latents), and ``guidance_half="both"`` keeps the negative calls' apart."""
    pipe = pipes["flux"]
    extra = dict(true_cfg_scale=4.0, negative_prompt="a yellow star", steps=1)
    with trace(pipe) as plain:
        sample(pipe, [PROMPTS[0]], steps=1)
    recorded = {}
    for half in ("cond", "both"):
        with trace(pipe, guidance_half=half) as tracer:
            sample(pipe, [PROMPTS[0]], **extra)
        recorded[half] = tracer.maps()
    cond, both = recorded["cond"], recorded["both"]
    assert cond.meta["steps"] == 1 and [image["half"] for image in both.meta["images"]] == ["uncond", "cond"]
    for layer, tensor in plain.maps().tensors.items():
        assert torch.equal(cond.tensors[layer], tensor)  # the negative pass is not averaged in
        assert torch.equal(both.tensors[layer][:, 1:], tensor)
        assert not torch.equal(both.tensors[layer][:, :1], tensor)  # the negative prompt's own maps
