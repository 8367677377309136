"""``AttentionMaps``: words, word/token/pixel maps, per-step/per-head access, save → load."""

from __future__ import annotations

import json

import pytest
import torch

import crossattn
from crossattn.attention.maps import AttentionMaps, merge_words

from .attention_helpers import PROMPT, generator


@pytest.fixture(scope="module")
def pipe(tiny_pipe):
    return tiny_pipe


@pytest.fixture(scope="module")
def detailed(pipe):
    with crossattn.trace(pipe, kind="both", per_step=True, per_head=True) as tracer:
        pipe(PROMPT, num_inference_steps=3, generator=generator(), output_type="pt")
    return tracer.maps()


@pytest.fixture(scope="module")
def aggregated(pipe):
    with crossattn.trace(pipe) as tracer:
        pipe(PROMPT, num_inference_steps=3, generator=generator(), output_type="pt")
    return tracer.maps()


def test_merge_words_decodes_byte_level_bpe_words():
    """CLIP spells each UTF-8 byte as one character ('é' is 'Ã©'): words come back as the prompt wrote
    them, so ``edit --to`` or ``maps --word`` with non-ASCII words finds them."""
    from crossattn.models.tokenizer import load_tokenizer

    tok = load_tokenizer()
    for prompt, word in [("a ééé circle", "ééé"), ("a 圆 square", "圆"), ("a 🦊 fox", "🦊")]:
        tokens = tok.convert_ids_to_tokens(tok(prompt).input_ids)
        assert [w for w, _ in merge_words(tokens)] == ["a", word, prompt.split()[-1]]


def test_merge_words_follows_clip_word_ends():
    tokens = ["<|startoftext|>", "a</w>", "cir", "cle</w>", "left</w>", "<|endoftext|>"]
    assert merge_words(tokens) == [("a", [1]), ("circle", [2, 3]), ("left", [4])]


def test_tokens_words_and_shapes(aggregated):
    assert aggregated.tokens[0] == "<|startoftext|>" and aggregated.tokens[-1] == "<|endoftext|>"
    assert aggregated.words == ["a", "red", "circle", "left", "of", "a", "blue", "square"]
    assert aggregated.image_size == (16, 16)
    assert aggregated.word_map("circle").shape == (16, 16)
    assert aggregated.word_map("circle").dtype == torch.float32
    assert aggregated.token_map(3).shape == (16, 16)
    torch.testing.assert_close(aggregated.word_map("Circle"), aggregated.token_map(3))
    torch.testing.assert_close(aggregated.word_map("a"), aggregated.token_map(1) + aggregated.token_map(6))


def test_word_map_is_the_mean_of_its_steps_and_heads(detailed):
    steps = torch.stack([detailed.word_map("square", step=s) for s in range(3)])
    torch.testing.assert_close(steps.mean(0), detailed.word_map("square"), atol=1e-6, rtol=0)
    layer = detailed.cross_layers[0]
    heads = torch.stack([detailed.attention(layer, head=h) for h in range(2)])
    torch.testing.assert_close(heads.mean(0), detailed.attention(layer), atol=1e-6, rtol=0)


def test_per_layer_and_resolution_selection(detailed):
    layer = detailed.cross_layers[0]
    assert detailed.word_map("red", layers=layer).shape == (16, 16)
    assert detailed.word_map("red", layers=8).shape == (16, 16)
    with pytest.raises(ValueError, match="layers are: "):
        detailed.word_map("red", layers="up_blocks.9")


def test_repr_and_self_only_maps(pipe, detailed):
    assert repr(detailed).startswith(f"AttentionMaps(prompt={PROMPT!r}, images=1, layers=4 cross + 4 self, steps=3")
    with crossattn.trace(pipe, kind="self", layers=8) as tracer:
        pipe(PROMPT, num_inference_steps=1, generator=generator(), output_type="pt")
    maps = tracer.maps()
    assert maps.words == detailed.words and maps.pixel_map(0, 0).shape == (16, 16)
    with pytest.raises(ValueError, match="no cross-attention layers were recorded"):
        maps.word_map("circle")


def test_self_attention_pixel_map(detailed):
    m = detailed.pixel_map(3, 12)
    assert m.shape == (16, 16)
    # every self-attention row is a distribution over the 8x8 positions; upsampled ×4 in area
    torch.testing.assert_close(m.sum(), torch.tensor(4.0), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="outside the 16x16 image"):
        detailed.pixel_map(16, 0)


def test_bad_words_and_unrecorded_detail_are_clear_errors(aggregated):
    with pytest.raises(ValueError, match="word 'triangle' is not in the prompt of image 0; words are: a, red, circle"):
        aggregated.word_map("triangle")
    with pytest.raises(ValueError, match="per_step=True"):
        aggregated.word_map("circle", step=0)
    with pytest.raises(ValueError, match="per_head=True"):
        aggregated.word_map("circle", head=0)
    with pytest.raises(ValueError, match="kind='self'"):
        aggregated.pixel_map(0, 0)
    with pytest.raises(ValueError, match="image 3 out of range"):
        aggregated.word_map("circle", image=3)


def test_save_load_round_trip_is_exact(detailed, tmp_path):
    tensors_path, json_path = detailed.save(tmp_path / "x.maps")
    assert tensors_path.name == "x.maps.safetensors" and json_path.name == "x.maps.json"
    meta = json.loads(json_path.read_text())
    assert meta["images"][0]["prompt"] == PROMPT and meta["steps"] == 3 and meta["images"][0]["half"] == "cond"
    loaded = AttentionMaps.load(tensors_path)
    assert loaded.meta == detailed.meta
    assert loaded.layer_names == detailed.layer_names
    for name, tensor in detailed.tensors.items():
        assert torch.equal(loaded.tensors[name], tensor)
    assert torch.equal(loaded.word_map("circle", step=2, head=1), detailed.word_map("circle", step=2, head=1))
    with pytest.raises(FileNotFoundError):
        AttentionMaps.load(tmp_path / "missing.safetensors")
