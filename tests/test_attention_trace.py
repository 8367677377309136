"""``crossattn.trace`` on our pipeline: restore, refusal, identity of the image, the store's counts."""

from __future__ import annotations

import pytest
import torch

import crossattn
from crossattn.attention.processor import CaptureProcessor
from crossattn.attention.trace import TraceError

from .attention_helpers import PROMPT, generator


@pytest.fixture(scope="module")
def pipe(tiny_pipe):
    return tiny_pipe


def sample(pipe, prompt=PROMPT, steps=2, seed=0, **kwargs):
    return pipe(prompt, num_inference_steps=steps, generator=generator(seed), output_type="pt", **kwargs).images


def test_image_is_bit_identical_with_and_without_tracing(pipe):
    plain = sample(pipe, steps=3)
    with crossattn.trace(pipe, kind="both", per_step=True, per_head=True):
        traced = sample(pipe, steps=3)
    assert torch.equal(plain, traced)


def test_processors_and_class_restored_after_exit_and_after_exception(pipe):
    before = dict(pipe.unet.attn_processors)
    cls = type(pipe)
    with crossattn.trace(pipe, kind="cross"):
        during = pipe.unet.attn_processors
        captured = [k for k, p in during.items() if isinstance(p, CaptureProcessor)]
        assert captured == [k for k in before if k.endswith("attn2.processor")]
        assert all(during[k] is before[k] for k in before if k.endswith("attn1.processor"))  # untouched
    assert all(pipe.unet.attn_processors[k] is p for k, p in before.items())
    assert type(pipe) is cls
    with pytest.raises(KeyError), crossattn.trace(pipe, kind="both"):
        sample(pipe, steps=1)
        raise KeyError("boom")
    assert all(pipe.unet.attn_processors[k] is p for k, p in before.items())
    assert type(pipe) is cls and not pipe.unet._forward_pre_hooks


def test_double_tracing_raises_and_leaves_the_first_trace_working(pipe):
    with crossattn.trace(pipe) as tracer:
        with pytest.raises(TraceError, match="already"), crossattn.trace(pipe, kind="self"):
            pass
        with pytest.raises(TraceError, match="already"), tracer:
            pass
        sample(pipe, steps=1)
        assert tracer.maps().num_steps == 1
    assert not any(isinstance(p, CaptureProcessor) for p in pipe.unet.attn_processors.values())


def test_maps_are_probabilities_and_per_step_count_is_layers_times_steps(pipe):
    with crossattn.trace(pipe, kind="both", per_step=True, per_head=True) as tracer:
        sample(pipe, steps=3)
    maps = tracer.maps()
    assert len(maps.cross_layers) == 4 and len(maps.self_layers) == 4
    assert sum(t.shape[0] for t in maps.tensors.values()) == len(maps.layer_names) * 3
    for name, t in maps.tensors.items():
        torch.testing.assert_close(t.sum(-1), torch.ones(t.shape[:-1]), atol=1e-5, rtol=0, msg=name)
    every_token = sum(maps.token_map(i) for i in range(len(maps.tokens)))  # prompt tokens only
    padding = sum(maps.token_map(i) for i in range(len(maps.tokens), 16))
    torch.testing.assert_close(every_token + padding, torch.ones(16, 16), atol=1e-5, rtol=0)


def test_memory_does_not_grow_with_steps_when_aggregated(pipe):
    sizes = []
    for steps in (2, 6):
        with crossattn.trace(pipe, kind="both") as tracer:
            sample(pipe, steps=steps)
        sizes.append(tracer.nbytes())
    assert sizes[0] == sizes[1] > 0
    with crossattn.trace(pipe, kind="both", per_step=True) as tracer:
        sample(pipe, steps=6)
    assert tracer.nbytes() == 6 * sizes[1]  # per step: one copy of the sums per step


def test_batch_of_two_equals_the_single_runs(pipe):
    prompts = [PROMPT, "a green triangle"]
    with crossattn.trace(pipe) as tracer:
        pipe(prompts, num_inference_steps=2, generator=[generator(0), generator(1)], output_type="pt")
    both = tracer.maps()
    assert both.num_images == 2
    for i, prompt in enumerate(prompts):
        with crossattn.trace(pipe) as tracer:
            sample(pipe, prompt, seed=i)
        single = tracer.maps()
        assert both.tokens_for(i) == single.tokens and both.prompt(i) == prompt
        for name in single.layer_names:
            torch.testing.assert_close(both.tensors[name][:, i], single.tensors[name][:, 0], atol=1e-5, rtol=0)


def test_guidance_halves_are_recorded_and_named(pipe):
    with crossattn.trace(pipe, guidance_half="both") as tracer:
        sample(pipe, negative_prompt="a blue square")
    maps = tracer.maps()
    assert maps.halves == ["uncond", "cond"] and maps.meta["guided"] is True
    assert maps.words_for(0) == ["a", "blue", "square"] and maps.prompt(1) == PROMPT
    with crossattn.trace(pipe) as tracer:
        sample(pipe, guidance_scale=1.0)
    assert tracer.maps().halves == ["cond"] and tracer.maps().meta["guided"] is False
    with (
        pytest.raises(ValueError, match="without classifier-free guidance"),
        crossattn.trace(pipe, guidance_half="uncond"),
    ):
        sample(pipe, guidance_scale=1.0)


def test_uncond_half_differs_from_cond_half(pipe):
    with crossattn.trace(pipe, guidance_half="both") as both_tracer:
        sample(pipe)
    with crossattn.trace(pipe, guidance_half="uncond") as tracer:
        sample(pipe)
    name = tracer.maps().layer_names[0]
    both = both_tracer.maps().tensors[name]
    assert torch.equal(tracer.maps().tensors[name][:, 0], both[:, 0])
    assert not torch.allclose(both[:, 0], both[:, 1])


def test_layers_by_resolution_and_pattern(pipe):
    with crossattn.trace(pipe, layers=8) as tracer:
        assert len(tracer.layers) == 4
    with crossattn.trace(pipe, kind="both", layers="up_blocks.*") as tracer:
        assert [layer.name.rsplit(".", 1)[-1] for layer in tracer.layers] == ["attn1", "attn2"] * 2
    with crossattn.trace(pipe, layers="mid_block") as tracer:
        assert [layer.name for layer in tracer.layers] == ["mid_block.attentions.0.transformer_blocks.0.attn2"]
    with pytest.raises(ValueError, match="layers are: down_blocks.1.attentions.0.transformer_blocks.0.attn2"):
        crossattn.trace(pipe, layers="nothing*")
    with pytest.raises(ValueError, match="kind"):
        crossattn.trace(pipe, kind="all")
    with pytest.raises(ValueError, match="guidance_half"):
        crossattn.trace(pipe, guidance_half="negative")


def test_nothing_recorded_is_a_clear_error(pipe):
    with crossattn.trace(pipe) as tracer:
        pass
    with pytest.raises(ValueError, match="nothing was recorded"):
        tracer.maps()


def test_text_kv_projections_are_computed_once_per_sampling_with_identical_output(pipe):
    layer = dict(pipe.unet.named_modules())["down_blocks.1.attentions.0.transformer_blocks.0.attn2"]
    calls = []
    handle = layer.to_k.register_forward_hook(lambda *_: calls.append(1))
    try:
        results = {}
        for cache in (True, False):
            calls.clear()
            with crossattn.trace(pipe, cache_kv=cache) as tracer:
                image = sample(pipe, steps=4, relation_guidance=0)  # guidance passes project K too
            results[cache] = (len(calls), image, tracer.maps().tensors)
    finally:
        handle.remove()
    assert results[True][0] == 1 and results[False][0] == 4
    assert torch.equal(results[True][1], results[False][1])
    assert all(torch.equal(results[True][2][n], results[False][2][n]) for n in results[True][2])
