"""Flux.2 [dev] (``Flux2Pipeline``: the Flux.2 transformer, guidance-distilled, over Mistral Small 3): its keys are the
Mistral tokens of a system message and the prompt, merged into the prompt's words (``Ġ`` pieces), and its guidance is
an input of one call a step, not true CFG. The surfaces (generate, maps, serve, edit, --image) are the 2026 families'
parametrized tests (``flux2-dev`` in ``tests/family_pipelines.py``'s ``FAMILIES_2026``)."""

from __future__ import annotations

import types

import numpy as np
import pytest

from crossattn.attention.families import FLUX2, FLUX2_DEV, family_of
from crossattn.attention.text_layout import prompt_tokens
from crossattn.attention.trace import trace
from crossattn.attention.words import merge_words
from crossattn.errors import BadArgument
from crossattn.sampling import SamplingRequest
from crossattn.sampling.run import call_kwargs

from .family_pipelines import build_family, sample

PROMPT = "a green triangle left of a red circle"
LENGTH = 128  # the tiny pipeline's text keys in these tests (the system message takes about 95)


@pytest.fixture(scope="module")
def pipe():
    return build_family("flux2-dev")


def pipeline_tokens(pipe, prompt: str) -> list[str]:
    """The tokens ``Flux2Pipeline`` feeds its text encoder (its own ``format_input`` and ``apply_chat_template``)."""
    from diffusers.pipelines.flux2.pipeline_flux2 import format_input

    inputs = pipe.tokenizer.apply_chat_template(
        format_input([prompt], system_message=pipe.system_message), add_generation_prompt=False, tokenize=True,
        return_dict=True, padding="max_length", truncation=True, max_length=LENGTH,
    )  # fmt: skip
    tokenizer = getattr(pipe.tokenizer, "tokenizer", pipe.tokenizer)
    return tokenizer.convert_ids_to_tokens(inputs["input_ids"][0])


def test_the_family_is_told_apart_from_klein_by_guidance_embeds(pipe):
    assert family_of(pipe.transformer) is FLUX2_DEV and family_of(build_family("flux2").transformer) is FLUX2
    assert FLUX2_DEV.tokens == "mistral" and FLUX2_DEV.true_cfg is None


def test_keys_are_the_pipelines_mistral_tokens_and_merge_into_words(pipe):
    tokens, encoders = prompt_tokens(pipe, pipe.tokenizer, PROMPT, True, LENGTH)
    assert tokens == pipeline_tokens(pipe, PROMPT)  # key i is the token the text encoder read at i
    assert tokens[:2] == ["<s>", "[SYSTEM_PROMPT]"] and "[INST]" in tokens and tokens[-1] == "<pad>"
    words = merge_words(tokens, encoders)
    assert [w for w, _ in words] == PROMPT.split()
    triangle = dict(words)["triangle"]
    pieces = [tokens[i] for i in triangle]
    assert len(pieces) > 1 and "".join(pieces) == "Ġtriangle"  # a word of several Mistral pieces (Ġtri, ang, le)
    first = words[0][1][0]
    assert tokens[first - 1] == "[INST]" and encoders[first - 1] == "none" and tokens[first] == "a"  # no Ġ after [INST]


def test_a_processor_tokenizer_gives_the_same_keys(pipe):
    """Real Flux.2 [dev] folders hold a ``PixtralProcessor`` (``apply_chat_template`` and its text ``tokenizer``)."""
    processor = types.SimpleNamespace(tokenizer=pipe.tokenizer, apply_chat_template=pipe.tokenizer.apply_chat_template)
    wrapped = types.SimpleNamespace(
        tokenizer=processor, system_message=pipe.system_message, transformer=pipe.transformer
    )
    assert prompt_tokens(wrapped, processor, PROMPT, True, LENGTH) == prompt_tokens(pipe, None, PROMPT, True, LENGTH)


def test_guidance_is_an_input_of_one_call_a_step(pipe):
    """No true CFG: the maps are every call's, unlabelled; --guidance reaches the distilled guidance embedding."""
    with trace(pipe, kind="cross") as tracer:
        traced = sample(pipe, [PROMPT], guidance_scale=4.0)
    maps = tracer.maps()
    assert not maps.meta["guided"] and len(maps.meta["images"]) == 1 and maps.words == PROMPT.split()
    other = sample(pipe, [PROMPT], guidance_scale=1.5)
    assert not np.array_equal(np.asarray(traced[0]), np.asarray(other[0]))
    request = SamplingRequest((PROMPT,), guidance=2.5)
    assert call_kwargs(pipe, request)["guidance_scale"] == 2.5
    with pytest.raises(BadArgument, match="takes no negative prompt"):
        call_kwargs(pipe, request.replace(negative_prompt="a blue square"))
