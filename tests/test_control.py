"""``crossattn.control`` and ``crossattn.edit`` (prompt-to-prompt) on tiny pipelines: install and restore,
the identities an edit must keep, token alignment, composition with the tracer, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

import crossattn
from crossattn.attention.processor import CaptureProcessor
from crossattn.editing.control import ControlError, ControlProcessor
from crossattn.editing.local_blend import LocalBlend, connected_parts
from crossattn.editing.prompt_edit import edit
from crossattn.editing.token_alignment import align_tokens

from .attention_helpers import generator, tiny_sd_pipeline

SOURCE, TARGET = "a red circle", "a blue circle"


@pytest.fixture(scope="module")
def pipe(tiny_pipe):
    return tiny_pipe


@pytest.fixture(scope="module")
def sd_pipe():
    return tiny_sd_pipeline()


def rows(pipe, prompts, steps=3, **kwargs):
    """Sample ``prompts`` from one noise (a generator per row, same seed) as float images ``(B, 3, H, W)``."""
    gens = [generator(0) for _ in prompts]
    return pipe(prompts, num_inference_steps=steps, generator=gens, output_type="pt", **kwargs).images


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32)


def test_processors_restored_after_exit_and_after_exception(pipe):
    before = dict(pipe.unet.attn_processors)
    with crossattn.control(pipe, SOURCE, TARGET, cross_steps=0.5, self_steps=0.5):
        during = pipe.unet.attn_processors
        controlled = [k for k, p in during.items() if isinstance(p, ControlProcessor)]
        assert controlled == list(before)  # every layer of the tiny U-Net is at most 16×16
    with crossattn.control(pipe, SOURCE, TARGET, cross_steps=0.5, self_steps=0.0):
        during = pipe.unet.attn_processors
        assert all(isinstance(during[k], ControlProcessor) for k in before if k.endswith("attn2.processor"))
        assert all(during[k] is before[k] for k in before if k.endswith("attn1.processor"))  # fused, untouched
        assert all(type(during[k]) is AttnProcessor2_0 for k in before if k.endswith("attn1.processor"))
    with pytest.raises(KeyError), crossattn.control(pipe, SOURCE, TARGET):
        rows(pipe, [SOURCE, TARGET], steps=1)
        raise KeyError("boom")
    assert all(pipe.unet.attn_processors[k] is p for k, p in before.items())
    assert not pipe.unet._forward_pre_hooks and not pipe.unet._forward_hooks


def test_double_install_is_refused(pipe):
    with crossattn.control(pipe, SOURCE, TARGET) as first:
        with pytest.raises(ControlError, match="already"), crossattn.control(pipe, SOURCE, TARGET):
            pass
        with pytest.raises(ControlError, match="already"), first:
            pass
        assert any(isinstance(p, ControlProcessor) for p in pipe.unet.attn_processors.values())
    trivial = crossattn.control(pipe, SOURCE, TARGET, cross_steps=0, self_steps=0)  # installs no processor
    with trivial, pytest.raises(ControlError, match="already"), crossattn.control(pipe, SOURCE, TARGET):
        pass
    assert not pipe.unet._forward_pre_hooks


@pytest.mark.parametrize("which", ["ours", "sd"])
def test_edit_identities(which, pipe, sd_pipe):
    """No control gives the plain target; source == target gives the source; reweight 1.0 changes nothing."""
    p = pipe if which == "ours" else sd_pipe
    off = edit(p, SOURCE, TARGET, generator=generator(1), cross_steps=0, self_steps=0, blend=False, shared_steps=0,
               num_inference_steps=3)  # fmt: skip
    assert off.edited.size == off.plain.size == off.source.size and off.changed == [("red", "blue")]
    np.testing.assert_allclose(pixels(off.edited), pixels(off.plain), atol=1e-5)
    same = edit(p, SOURCE, SOURCE, generator=generator(1), num_inference_steps=3)
    np.testing.assert_allclose(pixels(same.edited), pixels(same.source), atol=1e-5)
    plain = edit(p, SOURCE, TARGET, generator=generator(1), num_inference_steps=3)
    ones = edit(p, SOURCE, TARGET, generator=generator(1), reweight={"circle": 1.0}, num_inference_steps=3)
    np.testing.assert_allclose(pixels(ones.edited), pixels(plain.edited), atol=1e-5)
    assert not np.array_equal(pixels(plain.edited), pixels(plain.plain))  # the control does act


def test_identities_hold_in_float(pipe):
    """The same three identities on the float outputs of one controlled batch, within 1e-5."""
    with crossattn.control(pipe, SOURCE, TARGET, cross_steps=0, self_steps=0, extra_rows=1):
        x = rows(pipe, [SOURCE, TARGET, TARGET])
    torch.testing.assert_close(x[1], x[2], atol=1e-5, rtol=0)
    with crossattn.control(pipe, SOURCE, SOURCE, cross_steps=1.0, self_steps=1.0):
        x = rows(pipe, [SOURCE, SOURCE])
    torch.testing.assert_close(x[1], x[0], atol=1e-5, rtol=0)
    with crossattn.control(pipe, SOURCE, TARGET):
        base = rows(pipe, [SOURCE, TARGET])
    with crossattn.control(pipe, SOURCE, TARGET, reweight={"blue": 1.0}):
        ones = rows(pipe, [SOURCE, TARGET])
    torch.testing.assert_close(ones, base, atol=1e-5, rtol=0)
    with crossattn.control(pipe, SOURCE, TARGET, reweight={"blue": 3.0}):
        three = rows(pipe, [SOURCE, TARGET])
    torch.testing.assert_close(three[0], base[0], atol=1e-5, rtol=0)  # the source row is never edited
    assert (three[1] - base[1]).abs().max() > 1e-3


def test_local_blend_keeps_the_source_outside_the_changed_words_region(pipe):
    with crossattn.control(pipe, SOURCE, TARGET, cross_steps=0, self_steps=0, blend=True) as ctl:
        ctl.local_blend.threshold = 0.97  # the random tiny model's maps are nearly flat: a high cut makes a region
        gens = [generator(0), generator(0)]
        x = pipe([SOURCE, TARGET], num_inference_steps=3, generator=gens, output_type="pt",
                 callback_on_step_end=ctl.step_callback, callback_on_step_end_tensor_inputs=["latents"]).images  # fmt: skip
    outside = ctl.local_blend.mask((16, 16))[0, 0] == 0  # (16, 16)
    assert 0 < int(outside.sum()) < 256  # a region, not nothing, not everything
    torch.testing.assert_close(x[1][:, outside], x[0][:, outside], atol=1e-6, rtol=0)
    assert (x[1][:, ~outside] - x[0][:, ~outside]).abs().max() > 1e-3  # inside, the target is its own
    assert ctl.local_blend.source_tokens == [2] and ctl.local_blend.target_tokens == [[2]]  # "red" / "blue"


def test_local_blend_drops_a_weaker_separate_part_of_the_region():
    """Two blobs the changed word attends to (peaks 1.0 and 0.7, as a colour word's own object and the
    other object): the 0.3 cut keeps both; a peak ratio of 0.9 keeps only the strong one, 0 both."""
    maps = torch.zeros(2, 8, 8)  # (R, h, w): the source's maps, one target's
    maps[:, 1:3, 1:3], maps[:, 6:8, 5:8] = 1.0, 0.7  # apart after the 3×3 max-pool
    blend = LocalBlend([2], [[2]])
    blend.maps = maps.view(2, 64)
    strong = blend.mask((16, 16))[0, 0] > 0  # (16, 16): latents at twice the layer's side
    assert strong[2:6, 2:6].all() and not strong[10:16, 8:16].any() and blend.peak_ratio == 0.9
    blend.peak_ratio = 0.0
    both = blend.mask((16, 16))[0, 0] > 0
    assert both[2:6, 2:6].all() and both[12:16, 10:16].all()
    assert torch.equal(both & ~strong, both & (torch.arange(16)[:, None] >= 9))  # only the weak part went


def test_connected_parts_label_each_8_connected_part_once():
    region = torch.zeros(1, 1, 5, 5, dtype=torch.bool)
    region[0, 0, 0, 0] = region[0, 0, 1, 1] = region[0, 0, 4, 4] = region[0, 0, 4, 0] = True  # a diagonal pair
    labels = connected_parts(region)[0, 0]
    assert labels[0, 0] == labels[1, 1] > 0 and len({int(labels[4, 4]), int(labels[4, 0]), int(labels[0, 0])}) == 3
    assert (labels[~region[0, 0]] == 0).all()


def test_shared_steps_make_the_target_follow_the_source_latents(pipe):
    every = edit(pipe, SOURCE, TARGET, generator=generator(2), cross_steps=0, self_steps=0, blend=False,
                 shared_steps=1.0, num_inference_steps=3)  # fmt: skip
    assert np.array_equal(pixels(every.edited), pixels(every.source))
    some = edit(pipe, SOURCE, TARGET, generator=generator(2), cross_steps=0, self_steps=0, blend=False,
                shared_steps=0.5, num_inference_steps=4)  # fmt: skip
    assert not np.array_equal(pixels(some.edited), pixels(some.source))
    assert not np.array_equal(pixels(some.edited), pixels(some.plain))


@pytest.mark.parametrize("which", ["ours", "sd"])
def test_shared_steps_skip_the_target_rows_and_match_a_traced_edit(which, pipe, sd_pipe):
    """During the shared steps the U-Net computes [source, plain] only (4 rows under guidance, not 6);
    the images equal those of the same edit inside a trace, where every row is computed."""
    p = pipe if which == "ours" else sd_pipe
    seen = []
    hook = p.unet.conv_in.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    settings = dict(generator=generator(4), num_inference_steps=4, shared_steps=0.5, guidance_scale=4.0)
    try:
        fast = edit(p, SOURCE, TARGET, **settings)
        assert seen == [4, 4, 6, 6]
        settings["generator"] = generator(4)
        with crossattn.trace(p):
            traced = edit(p, SOURCE, TARGET, **settings)
        assert seen[4:] == [6, 6, 6, 6]
    finally:
        hook.remove()
    for name in ("source", "plain", "edited"):
        np.testing.assert_allclose(pixels(getattr(fast, name)), pixels(getattr(traced, name)), atol=1e-5)
    assert not p.unet._forward_pre_hooks and not p.unet._forward_hooks


def test_edit_reproducible_and_generator_not_shared(pipe):
    a = edit(pipe, SOURCE, TARGET, generator=generator(3), num_inference_steps=2)
    b = edit(pipe, SOURCE, TARGET, generator=generator(3), num_inference_steps=2, plain=False)
    assert np.array_equal(pixels(a.edited), pixels(b.edited)) and b.plain is None
    assert np.array_equal(pixels(a.source), pixels(b.source))


def test_token_alignment(pipe):
    tok, length = pipe.tokenizer, 16
    same = align_tokens(tok, SOURCE, SOURCE, length)
    assert torch.equal(same.matrix, torch.eye(length)) and bool(same.alpha.all()) and same.changed == []
    swap = align_tokens(tok, SOURCE, TARGET, length)  # one token per word: still the identity
    assert torch.equal(swap.matrix, torch.eye(length)) and swap.changed == [("red", "blue")]
    longer = align_tokens(tok, "a circle", "a red circle", length)  # tokens: <s> a circle </s> → <s> a red circle </s>
    assert longer.alpha[3] == 1 and longer.matrix[2, 3] == 1 and longer.alpha[2] == 0  # circle moved, red is new
    assert longer.matrix[3, 4] == 1 and longer.matrix[length - 2, length - 1] == 1  # end token and padding shift
    assert longer.changed == [("", "red")]
    block = align_tokens(tok, "a red circle", "a big blue circle", length)
    assert block.matrix[2, 3] == 1 and block.alpha[2] == 0 and block.changed == [("red", "big blue")]
    mapped = longer.matrix.sum(1)
    assert set(mapped.tolist()) <= {0.0, 1.0}  # each source token's mass goes somewhere once, or is dropped


def test_trace_records_the_edited_maps_inside_the_window(pipe):
    """Trace outside, control inside: the target's recorded maps are the source's during the window only."""
    with crossattn.trace(pipe, per_step=True) as tracer:
        with crossattn.control(pipe, SOURCE, TARGET, cross_steps=0.5, self_steps=0) as ctl:
            rows(pipe, [SOURCE, TARGET], steps=4)
        assert all(isinstance(p, CaptureProcessor | AttnProcessor2_0) for p in pipe.unet.attn_processors.values())
    assert (ctl.steps, ctl.cross_stop) == (4, 2)
    maps = tracer.maps()
    for name, t in maps.tensors.items():  # (S, R, 1, N, K); the swap's token map is the identity
        torch.testing.assert_close(t[:2, 1], t[:2, 0], atol=0, rtol=0, msg=name)
        assert (t[2:, 1] - t[2:, 0]).abs().max() > 1e-6, name
    with crossattn.control(pipe, SOURCE, TARGET), pytest.raises(ValueError, match="ControlProcessor"):
        crossattn.trace(pipe).__enter__()  # trace first, then control
    assert not pipe.unet._forward_pre_hooks


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"reweight": {"square": 2.0}}, "reweighted word 'square' is not in the prompt"),
        ({"reweight": {"blue": -1.0}}, "accepted: a finite number >= 0"),
        ({"cross_steps": 1.5}, "cross_steps is 1.5; accepted: a fraction"),
        ({"self_steps": -0.1}, "self_steps is -0.1; accepted: a fraction"),
        ({"relation_guidance": 50.0}, "relation guidance off"),
        ({"prompt": "x"}, "edit sets prompt itself"),
        ({"halves": "uncond"}, "accepted: both, cond"),
    ],
)
def test_bad_input_is_one_value_error_before_sampling(pipe, kwargs, match):
    before = dict(pipe.unet.attn_processors)
    with pytest.raises(ValueError, match=match):
        edit(pipe, SOURCE, TARGET, generator=generator(0), num_inference_steps=1, **kwargs)
    assert all(pipe.unet.attn_processors[k] is p for k, p in before.items())


def test_gradient_passes_and_wrong_batches_are_refused(pipe):
    relation = "a red circle left of a blue square"
    with crossattn.control(pipe, relation, relation), pytest.raises(ValueError, match="ControlProcessor|relation_g"):
        rows(pipe, [relation, relation], steps=2, relation_guidance=50.0)
    with crossattn.control(pipe, SOURCE, TARGET), pytest.raises(ValueError, match="expects"):
        rows(pipe, [SOURCE, TARGET, TARGET], steps=1)
    assert not pipe.unet._forward_pre_hooks
