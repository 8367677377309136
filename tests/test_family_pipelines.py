"""The tiny pipelines of the four families (``family_pipelines``): they sample, and survive the diffusers folder round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from .family_pipelines import (
    FAMILIES,
    FAMILIES_2026,
    PROMPTS,
    build_family,
    load_family,
    sample,
    t5_tokenizer,
)

CLASSES = {
    "sd15": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "sd3": "StableDiffusion3Pipeline",
    "sd3-no-t5": "StableDiffusion3Pipeline",
    "flux": "FluxPipeline",
    "qwenimage": "QwenImagePipeline",
    "flux2": "Flux2KleinPipeline",
    "flux2-dev": "Flux2Pipeline",
    "sd35": "StableDiffusion3Pipeline",
    "pixart-sigma": "PixArtSigmaPipeline",
    "sana": "SanaPipeline",
}
#: VAE factor of each family's tiny VAE: 2, but as the real ones where the pipeline bins sizes in pixels
SCALE = {"pixart-sigma": 8, "sana": 32}


def pixels(images):
    return [np.asarray(image) for image in images]


@pytest.fixture(scope="module")
def built():
    """``built(name)``: the family's tiny pipeline, built once for the module (its tests sample it, encode prompts and
    read its weights: none changes it)."""
    pipes = {}

    def get(name: str):
        if name not in pipes:
            pipes[name] = build_family(name)
        return pipes[name]

    return get


# T5 tokenizer


def test_t5_tokenizer_pads_truncates_and_marks_words():
    tok = t5_tokenizer()
    assert type(tok).__name__ == "T5Tokenizer"
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    enc = tok("a red circle", padding="max_length", max_length=8, truncation=True)
    assert tok.convert_ids_to_tokens(enc.input_ids) == ["▁a", "▁red", "▁circle", "</s>"] + ["<pad>"] * 4
    assert enc.attention_mask == [1] * 4 + [0] * 4
    long = tok(PROMPTS[1] + " above a yellow star", padding="max_length", max_length=8, truncation=True).input_ids
    assert len(long) == 8 and long[-1] == tok.eos_token_id and tok.pad_token_id not in long


def test_t5_tokenizer_splits_rare_words_into_pieces():
    tok = t5_tokenizer()

    def pieces(word):
        return tok.convert_ids_to_tokens(tok(word, add_special_tokens=False).input_ids)

    for word in ("a", "the", "of", "red", "blue", "green", "circle", "square", "left", "right", "above", "below"):
        assert pieces(word) == ["▁" + word]
    for word in ("triangle", "rectangle", "hexagon", "purple", "orange", "octagon", "zebra"):
        split = pieces(word)
        assert len(split) > 1 and split[0].startswith("▁") and not any(p.startswith("▁") for p in split[1:])
        assert "".join(split) == "▁" + word  # every ASCII letter is in the vocabulary: no <unk>
    assert tok.decode(tok(PROMPTS[1]).input_ids, skip_special_tokens=True) == PROMPTS[1]


def test_t5_tokenizer_folder_round_trip(tmp_path):
    built = t5_tokenizer()
    loaded = t5_tokenizer(tmp_path / "tokenizer_3")
    assert (tmp_path / "tokenizer_3" / "tokenizer.json").is_file()
    assert type(loaded) is type(built) and loaded.get_vocab() == built.get_vocab()
    kwargs = dict(padding="max_length", max_length=16, truncation=True)
    assert loaded(PROMPTS, **kwargs).input_ids == built(PROMPTS, **kwargs).input_ids


# Pipelines


@pytest.mark.parametrize("name", [*FAMILIES, *FAMILIES_2026])
def test_family_samples_and_round_trips(built, family_dir, name):
    """The session's folder (``family_dir``: ``save_family`` builds its own copy and saves it): equal pictures mean the
    builders are reproducible and the folder is whole."""
    from diffusers import DiffusionPipeline

    pipe = built(name)
    assert type(pipe).__name__ == CLASSES[name] and pipe.vae_scale_factor == SCALE.get(name, 2)
    assert not any(isinstance(m, torch.nn.Module) and m.training for m in pipe.components.values())
    images = sample(pipe)
    assert len(images) == 2 and all(image.size == (96, 64) for image in images)
    assert not np.array_equal(*pixels(images))  # the two prompts give different pictures

    folder = family_dir(name)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == CLASSES[name]
    if name == "sd3-no-t5":
        assert index["text_encoder_3"] == [None, None] and index["tokenizer_3"] == [None, None]
    loaded = load_family(folder)
    assert isinstance(loaded, DiffusionPipeline) and type(loaded) is type(pipe)
    for a, b in zip(pixels(sample(loaded)), pixels(images), strict=True):
        np.testing.assert_array_equal(a, b)


def test_sd3_with_and_without_t5_share_the_other_weights(built):
    with_t5, without = built("sd3"), built("sd3-no-t5")  # tiny_sd3_pipeline() and tiny_sd3_pipeline(with_t5=False)
    assert without.text_encoder_3 is None and without.tokenizer_3 is None
    for key in ("transformer", "text_encoder", "text_encoder_2", "vae"):
        other = without.components[key].state_dict()
        assert all(torch.equal(v, other[k]) for k, v in with_t5.components[key].state_dict().items()), key


@pytest.mark.parametrize(
    ("name", "prompt_shape", "pooled_shape"),
    [
        ("sd3", (2, 16 + 16, 32), (2, 32)),  # CLIP 16 tokens (16+16 wide, padded to 32) then T5's 16
        ("sd3-no-t5", (2, 16 + 16, 32), (2, 32)),  # zeros stand for T5
        ("flux", (2, 16, 32), (2, 16)),  # T5 states; CLIP gives only the pooled vector
        ("sdxl", (2, 16, 16), (2, 16)),  # two CLIP towers of width 8, side by side
    ],
)
def test_text_states_shapes(built, name, prompt_shape, pooled_shape):
    pipe = built(name)
    kwargs = {"max_sequence_length": 16} if name != "sdxl" else {}
    if name == "flux":
        out = pipe.encode_prompt(PROMPTS, prompt_2=None, **kwargs)
    else:
        extra = {"prompt_2": None, "prompt_3": None} if name.startswith("sd3") else {}
        out = pipe.encode_prompt(PROMPTS, do_classifier_free_guidance=False, **extra, **kwargs)
    prompt_embeds, pooled = out[0], (out[1] if name == "flux" else out[2])
    assert tuple(prompt_embeds.shape) == prompt_shape and tuple(pooled.shape) == pooled_shape
