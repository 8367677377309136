"""Relation guidance: which prompts it steers, the centroid loss, that the steps lower it, and that
sampling is untouched for other prompts, traced maps stay the ordinary passes', processors come back."""

from __future__ import annotations

import copy

import pytest
import torch

import crossattn
from crossattn.attention.record import record_cross_attention
from crossattn.models.relation_guidance import (
    RelationGuidance,
    RelationParse,
    RelationTarget,
    attention_centroids,
    guide_latents,
    parse_relation,
    relation_loss,
    relation_note,
    relation_target,
)
from crossattn.models.tokenizer import WordSpans

from .conftest import generator

RELATION = "a red circle left of a blue square"


def spans(pipe, max_length=16):
    return WordSpans(pipe.tokenizer, max_length)


def test_targets_name_each_objects_tokens_and_direction(tiny_pipe):
    # <|startoftext|> a red circle left of a blue square: every word is one CLIP token
    assert relation_target(RELATION, spans(tiny_pipe)) == RelationTarget((2, 3), (7, 8), (-1.0, 0.0))
    assert relation_target("A  Green Triangle BELOW a red ring", spans(tiny_pipe)) == RelationTarget(
        (2, 3), (6, 7), (0.0, 1.0)
    )
    for other in ("a red circle and a blue square", "a red circle at the top left", "a red circle", "left of"):
        assert relation_target(other, spans(tiny_pipe)) is None
    assert relation_target(RELATION, spans(tiny_pipe, max_length=9)) is None  # "square" cut off


def one_record(first_column: int, second_column: int, side: int = 4, tokens: int = 10, heads: int = 2):
    """A fake ``(heads, side², T)`` record: tokens 2-3 attend to one column, 7-8 to another."""
    probs = torch.zeros(heads, side, side, tokens)  # (h, y, x, T)
    probs[:, :, first_column, 2:4] = 1.0
    probs[:, :, second_column, 7:9] = 1.0
    return probs.view(heads, side * side, tokens), heads


def test_centroids_and_loss_follow_the_maps():
    target = RelationTarget((2, 3), (7, 8), (-1.0, 0.0))
    centroids = attention_centroids([one_record(0, 3)], [target])  # first at x = 0, second at x = 1
    assert torch.allclose(centroids, torch.tensor([[[0.0, 0.5], [1.0, 0.5]]]))
    config = RelationGuidance()
    assert relation_loss(centroids, [target], config).item() == 0.0  # left of: satisfied
    right = RelationTarget((2, 3), (7, 8), (1.0, 0.0))
    assert relation_loss(centroids, [right], config).item() == pytest.approx(1.0 + config.margin)
    above = RelationTarget((2, 3), (7, 8), (0.0, -1.0))  # along y: 0 apart; across x: 1 apart
    assert relation_loss(centroids, [above], config).item() == pytest.approx(config.margin + 1.0 - config.slack)


def current_loss(pipe, latents, t, states, targets, config):
    with torch.no_grad(), record_cross_attention(pipe.unet) as records:
        pipe.unet(latents, t, encoder_hidden_states=states)
    return relation_loss(attention_centroids(records, targets), targets, config)


def sharpened(pipe, factor: float = 30.0):
    """A copy whose cross-attention is peaked (a random tiny model attends almost uniformly)."""
    pipe = copy.deepcopy(pipe)
    for name, module in pipe.unet.named_modules():
        if name.endswith("attn2"):
            module.to_q.weight.data *= factor
    return pipe


def test_guidance_steps_lower_the_loss_and_leave_other_prompts_alone(tiny_pipe):
    pipe = sharpened(tiny_pipe)
    prompts = [RELATION, "a red circle and a blue square"]
    targets = [relation_target(p, spans(pipe)) for p in prompts]
    with torch.no_grad():
        states = pipe.encode_prompt(prompts)  # (2, T, D)
    pipe.scheduler.set_timesteps(10)
    t = pipe.scheduler.timesteps[0]
    latents = torch.randn(2, 3, 16, 16, generator=generator(3))
    config = RelationGuidance(scale=100.0, iterations=5)
    before = current_loss(pipe, latents[:1], t, states[:1], targets[:1], config)
    steered = guide_latents(pipe, latents, t, states, targets, config)
    after = current_loss(pipe, steered[:1], t, states[:1], targets[:1], config)
    assert after.item() < 0.5 * before.item()  # measured: 0.347 → 0.0
    assert torch.equal(steered[1], latents[1])  # no relation: untouched
    assert not any(p.grad is not None for p in pipe.unet.parameters())  # only the latents were differentiated


def sample(pipe, prompt, steps=3, **kwargs):
    return pipe(prompt, num_inference_steps=steps, generator=generator(1), output_type="pt", **kwargs).images


def test_pipeline_steers_relation_prompts_only(tiny_pipe):
    plain = "a red circle and a blue square"
    assert torch.equal(sample(tiny_pipe, plain), sample(tiny_pipe, plain, relation_guidance=0))
    steered, unsteered = sample(tiny_pipe, RELATION), sample(tiny_pipe, RELATION, relation_guidance=0)
    assert not torch.equal(steered, unsteered)
    assert torch.equal(steered, sample(tiny_pipe, RELATION))  # deterministic


def test_traced_maps_count_the_sampling_steps_and_processors_come_back(tiny_pipe):
    before = dict(tiny_pipe.unet.attn_processors)
    with crossattn.trace(tiny_pipe, per_step=True) as tracer:
        sample(tiny_pipe, RELATION, steps=3)
    assert tracer.maps().num_steps == 3  # the guidance passes are not recorded
    assert all(tiny_pipe.unet.attn_processors[k] is p for k, p in before.items())


@pytest.mark.parametrize("value", [-1.0, float("nan")])
def test_bad_strength_is_a_clear_value_error(tiny_pipe, value):
    with pytest.raises(ValueError, match="relation guidance scale must be a finite number >= 0"):
        sample(tiny_pipe, RELATION, relation_guidance=value)


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        # <|startoftext|> the big red circle is to the right of a small square
        ("the big red circle is to the right of a small square", RelationTarget((2, 3, 4), (11, 12), (1.0, 0.0))),
        ("A circle on top of a triangle", RelationTarget((2,), (7,), (0.0, -1.0))),
        ("circle under the square", RelationTarget((1,), (4,), (0.0, 1.0))),
    ],
)
def test_any_phrase_relation_phrase_is_read(tiny_pipe, prompt, expected):
    assert relation_target(prompt, spans(tiny_pipe, max_length=77)) == expected


@pytest.mark.parametrize(
    ("prompt", "problem"),
    [
        ("a circle above a square below a triangle", "names 2 relations ('above', 'below')"),
        ("left of a blue square", "no object named before 'left of'"),
        ("a red circle left of", "no object named after 'left of'"),
        ("a red circle and a blue square left of a triangle", "'and' joins several objects before 'left of'"),
    ],
)
def test_a_relation_the_guidance_cannot_read_is_named(tiny_pipe, prompt, problem):
    parse = parse_relation(prompt, spans(tiny_pipe, max_length=77))
    assert parse.target is None and problem in parse.problem
    with pytest.warns(UserWarning, match="relation guidance could not read .* sampled unsteered"):
        unsteered = sample(tiny_pipe, prompt)
    assert torch.equal(unsteered, sample(tiny_pipe, prompt, relation_guidance=0))
    assert relation_note(prompt, tiny_pipe.tokenizer, 77, 50.0) == {
        "relation_steered": False,
        "relation_not_read": parse.problem,
    }


def test_prompts_without_relations_are_not_flagged(tiny_pipe, recwarn):
    for prompt in ("a red circle at the top left", "a red circle and a blue square", "a cat"):
        assert parse_relation(prompt, spans(tiny_pipe, max_length=77)) == RelationParse()
        sample(tiny_pipe, prompt, steps=1)
    assert not [w for w in recwarn if "relation" in str(w.message)]
    assert relation_note(RELATION, tiny_pipe.tokenizer, 77, 50.0) == {"relation_steered": True}
    assert relation_note(RELATION, tiny_pipe.tokenizer, 77, 0.0) == {"relation_steered": False}


def test_sidecar_says_whether_the_relation_was_steered(tiny_model_dir, tmp_path, capsys):
    import json

    from crossattn.cli import main

    out = tmp_path / "out"
    argv = ["generate", "--model", str(tiny_model_dir), "--steps", "2", "--quiet", "--out", str(out)]
    assert main([*argv, RELATION, "a circle above a square below a triangle"]) == 0
    assert "relation guidance could not read" in capsys.readouterr().err
    steered = json.loads((out / "a-red-circle-left-of-a-blue-square-0-0.json").read_text())
    unread = json.loads((out / "a-circle-above-a-square-below-a-triangle-0-0.json").read_text())
    assert steered["relation_steered"] and "relation_not_read" not in steered
    assert not unread["relation_steered"] and "names 2 relations" in unread["relation_not_read"]


def test_recording_refuses_a_layer_it_would_silently_replace(tiny_pipe):
    """As the tracer does: only a reference processor (or a capture of one) may be swapped for recording."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    class Custom(AttnProcessor2_0):  # e.g. an attention edit: same call, other output
        pass

    pipe = copy.deepcopy(tiny_pipe)
    key = next(k for k in pipe.unet.attn_processors if k.endswith("attn2.processor"))
    pipe.unet.set_attn_processor({**pipe.unet.attn_processors, key: Custom()})
    before = dict(pipe.unet.attn_processors)
    with pytest.raises(ValueError, match=r"cannot record .*attn2: it runs Custom"), record_cross_attention(pipe.unet):
        pass
    assert all(pipe.unet.attn_processors[k] is p for k, p in before.items())
