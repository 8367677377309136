"""The sampling step handed down by the loop (:mod:`crossattn.attention.steps`): ours directly, a stock
diffusers pipeline through its ``callback_on_step_end`` (the caller's own callback chained), a bare U-Net by
the one timestep fallback; and ``NullText`` as a ``ProcessorHook``."""

from __future__ import annotations

from contextlib import ExitStack

import pytest
import torch

from crossattn.attention.steps import LoopStep, hands_down_steps
from crossattn.errors import HookError
from crossattn.sampling.inversion import NullText

from .attention_helpers import tiny_sd_pipeline


def steps_seen(pipe, **kwargs) -> tuple[list[tuple[int, bool]], list]:
    """``[(step, starts a sampling)]`` per U-Net call of one ``pipe("a red circle", ...)`` and the classes the
    pipeline had before and after."""
    clock, seen = LoopStep(), []
    hook = pipe.unet.register_forward_pre_hook(lambda m, a, k: seen.append(clock.take(a[1] if len(a) > 1 else k["timestep"])), with_kwargs=True)  # fmt: skip
    classes = [type(pipe)]
    try:
        with ExitStack() as undo:
            assert clock.listen(pipe, undo)
            pipe("a red circle", num_inference_steps=3, guidance_scale=2.0, output_type="pt", **kwargs)
        classes.append(type(pipe))
    finally:
        hook.remove()
    return seen, classes


def test_our_loop_hands_each_step_down(tiny_pipe):
    seen, classes = steps_seen(tiny_pipe)
    assert seen == [(0, True), (1, False), (2, False)]
    assert classes[0] is classes[1] and not hasattr(tiny_pipe, "_crossattn_step_listeners")


def test_a_stock_pipeline_is_told_through_its_callback_and_the_callers_runs_too():
    pipe, calls = tiny_sd_pipeline(), []

    def own(p, i, t, tensors):
        calls.append((i, sorted(tensors)))
        return {}

    seen, classes = steps_seen(pipe, callback_on_step_end=own, callback_on_step_end_tensor_inputs=["latents"])
    assert seen == [(0, True), (1, False), (2, False)]
    assert calls == [(i, ["latents"]) for i in range(3)]
    assert classes[0] is classes[1] and "_crossattn_call_watchers" not in pipe.__dict__  # all put back
    seen, _ = steps_seen(pipe)  # no callback of the caller's
    assert [step for step, _ in seen] == [0, 1, 2]


def test_a_bare_unet_counts_steps_from_the_timesteps(tiny_pipe):
    clock = LoopStep()
    with ExitStack() as undo:
        assert not clock.listen(tiny_pipe.unet, undo) and not hands_down_steps(tiny_pipe.unet)
    assert [clock.take(t) for t in (900, 500, 100, 950)] == [(0, True), (1, False), (2, False), (0, True)]


def test_null_text_is_a_processor_hook(tiny_pipe):
    states = {999: torch.zeros(1, 16, 32)}
    hook = NullText(tiny_pipe, states)
    with hook, pytest.raises(HookError, match="already installed"), hook:
        pass
    with NullText(tiny_pipe, states), pytest.raises(HookError, match="already has a null-text hook"):
        NullText(tiny_pipe.unet, states).__enter__()
    assert not tiny_pipe.unet._forward_pre_hooks and "_crossattn_step_listeners" not in tiny_pipe.__dict__


def test_null_text_names_a_sampling_off_the_inversions_timesteps(tiny_pipe):
    states = {998: torch.zeros(1, 16, 32), 3: torch.zeros(1, 16, 32)}  # no schedule of 2 steps starts at 998
    with NullText(tiny_pipe, states), pytest.raises(HookError, match="fitted at timestep 998, the sampling is at"):
        tiny_pipe("a red circle", num_inference_steps=2, guidance_scale=2.0, output_type="pt")


def test_a_diffusers_pipeline_callback_keeps_its_tensor_inputs():
    """A ``PipelineCallback`` names its tensors on the object, which the pipeline no longer sees once chained."""
    from diffusers.callbacks import SDCFGCutoffCallback

    pipe = tiny_sd_pipeline()
    cutoff = SDCFGCutoffCallback(cutoff_step_ratio=0.5)  # guidance off after half the steps: reads prompt_embeds
    seen, _ = steps_seen(pipe, callback_on_step_end=cutoff)
    assert [step for step, _ in seen] == [0, 1, 2] and pipe.guidance_scale == 0.0  # the cutoff ran


def test_the_call_watch_is_one_subclass_put_back_by_the_last_one_out_in_any_order():
    from crossattn.attention.steps import watch_calls

    pipe, calls = tiny_sd_pipeline(), []
    own = type(pipe)
    first, second = ExitStack(), ExitStack()
    watch_calls(pipe, lambda *a: calls.append("first"), first)
    watched = type(pipe)
    watch_calls(pipe, lambda *a: calls.append("second"), second)
    assert type(pipe) is watched is not own and watched.__bases__ == (own,)
    pipe("a red circle", num_inference_steps=1, output_type="pt")
    first.close()  # out of order: the first in leaves first
    assert type(pipe) is watched
    second.close()
    assert type(pipe) is own and calls == ["first", "second"] and "_crossattn_call_watchers" not in pipe.__dict__
