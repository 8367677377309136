"""The one install mechanism (:class:`crossattn.attention.install.ProcessorHook`) under the tracer and the
controller: restore after exit and after an exception (also a failed install), installing twice is an
error, hooks of different kinds compose, and the same base serves a joint-attention transformer."""

from __future__ import annotations

import pytest
import torch

import crossattn
from crossattn.attention.install import HookError, ProcessorHook, installed
from crossattn.attention.processor import CaptureProcessor
from crossattn.attention.trace import TraceError, Tracer
from crossattn.editing.control import ControlError, Controller, ControlProcessor
from crossattn.editing.settings import EditSettings

from .attention_helpers import generator

SOURCE, TARGET = "a red circle", "a blue circle"


@pytest.fixture(scope="module")
def pipe(tiny_pipe):
    return tiny_pipe


class Counting:
    """Runs the processor it replaces and counts the calls."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __call__(self, attn, hidden_states, *args, **kwargs):
        self.calls += 1
        return self.inner(attn, hidden_states, *args, **kwargs)


class CountingHook(ProcessorHook):
    """A minimal hook: wraps every processor whose key ends in ``suffix``; a pre-hook counts model calls."""

    processor_type = Counting
    noun = "counting hook"

    def __init__(self, model, suffix: str = "processor", fail_in_hooks: bool = False):
        super().__init__(model)
        self.suffix, self.fail_in_hooks, self.forward_calls = suffix, fail_in_hooks, 0

    def prepare(self, current: dict) -> dict:
        return {key: Counting(p) for key, p in current.items() if key.endswith(self.suffix)}

    def add_hooks(self, undo) -> None:
        undo.callback(self.model.register_forward_pre_hook(self._count).remove)
        if self.fail_in_hooks:
            raise RuntimeError("hook install failed")

    def _count(self, module, args) -> None:
        self.forward_calls += 1


def untouched(model, before: dict) -> bool:
    now = model.attn_processors
    return list(now) == list(before) and all(now[k] is p for k, p in before.items())


def no_hooks(model) -> bool:
    return not model._forward_pre_hooks and not model._forward_hooks


def sample(pipe, prompts, steps=2):
    gens = [generator(0) for _ in prompts]
    return pipe(prompts, num_inference_steps=steps, generator=gens, output_type="pt").images


def test_restored_after_exit_after_an_exception_and_after_a_failed_install(pipe):
    unet, before = pipe.unet, dict(pipe.unet.attn_processors)
    with CountingHook(unet, "attn2.processor") as hook:
        assert all(isinstance(unet.attn_processors[k], Counting) for k in before if k.endswith("attn2.processor"))
        assert all(unet.attn_processors[k] is before[k] for k in before if k.endswith("attn1.processor"))
        sample(pipe, [SOURCE], steps=1)
    assert hook.forward_calls == 1 and untouched(unet, before) and no_hooks(unet)  # one U-Net call a step
    with pytest.raises(KeyError), CountingHook(unet):
        raise KeyError("boom")
    assert untouched(unet, before) and no_hooks(unet)
    failing = CountingHook(unet, fail_in_hooks=True)
    with pytest.raises(RuntimeError, match="hook install failed"), failing:
        pass
    assert untouched(unet, before) and no_hooks(unet) and not failing.is_installed
    with failing.__class__(unet):  # a failed install leaves nothing that refuses the next one
        pass


def test_installing_twice_raises_and_leaves_the_first_in_place(pipe):
    unet, before = pipe.unet, dict(pipe.unet.attn_processors)
    with CountingHook(unet) as first:
        during = dict(unet.attn_processors)
        with pytest.raises(HookError, match="already installed"), first:
            pass
        with pytest.raises(HookError, match="already has a counting hook"), CountingHook(unet):
            pass
        assert untouched(unet, during) and installed(unet, CountingHook)
    assert untouched(unet, before) and no_hooks(unet) and not installed(unet, CountingHook)
    assert issubclass(TraceError, HookError) and issubclass(ControlError, HookError)


def test_a_processor_left_behind_is_an_error(pipe):
    unet, before = pipe.unet, dict(pipe.unet.attn_processors)
    hook = CountingHook(unet)
    with pytest.raises(HookError, match="Counting survived the restore"), hook:
        lost = hook._undo.pop_all()  # take the undo away: the restore cannot put the processors back
    lost.close()
    assert untouched(unet, before) and no_hooks(unet)


def test_tracer_and_controller_compose_and_unwind_in_order(pipe):
    unet, before = pipe.unet, dict(pipe.unet.attn_processors)
    with crossattn.trace(pipe, kind="both") as tracer:
        traced = dict(unet.attn_processors)
        with Controller(pipe, SOURCE, TARGET, EditSettings(0.5, 0.5, blend=False, shared_steps=0)) as ctl:
            wrapped = [p for p in unet.attn_processors.values() if isinstance(p, ControlProcessor)]
            assert wrapped and all(isinstance(p.inner, CaptureProcessor) for p in wrapped)
            assert installed(unet, Tracer) and installed(unet, Controller)
            sample(pipe, [SOURCE, TARGET])
        assert untouched(unet, traced) and not installed(unet, Controller)
        assert ctl.steps == 2 and tracer.maps().num_steps == 2  # the tracer recorded under the control
    assert untouched(unet, before) and no_hooks(unet) and not installed(unet, Tracer)


def test_old_keywords_and_settings_give_the_same_control(pipe):
    by_keywords = Controller(pipe, SOURCE, TARGET, cross_steps=0.5, reweight={"blue": 2.0})
    by_settings = Controller(
        pipe, SOURCE, TARGET, EditSettings(0.5, reweight={"blue": 2.0}, blend=False, shared_steps=0)
    )
    assert by_keywords.settings == by_settings.settings
    assert not by_keywords.settings.blend and by_keywords.settings.shared_steps == 0  # control()'s own defaults
    with pytest.raises(ValueError, match="not both"):
        Controller(pipe, SOURCE, TARGET, EditSettings(), cross_steps=0.5)
    with pytest.raises(TypeError, match="cross_step.*accepted: cross_steps"):
        Controller(pipe, SOURCE, TARGET, cross_step=0.5)
    with pytest.raises(ValueError, match="cross_steps is 2"):
        EditSettings(cross_steps=2)


def tiny_sd3_transformer():
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(0)
    return SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        caption_projection_dim=16,
        pooled_projection_dim=16,
        out_channels=4,
    )


def test_the_same_mechanism_serves_a_joint_attention_transformer():
    """SD3's transformer has the U-Net's processor API: a hook installs, runs and restores on it unchanged."""
    model = tiny_sd3_transformer()
    before = dict(model.attn_processors)
    inputs = {
        "hidden_states": torch.randn(1, 4, 8, 8),
        "encoder_hidden_states": torch.randn(1, 5, 16),
        "pooled_projections": torch.randn(1, 16),
        "timestep": torch.tensor([10]),
    }
    with torch.no_grad():
        plain = model(**inputs).sample
        with CountingHook(model) as hook:
            hooked = model(**inputs).sample
            counters = [p for p in model.attn_processors.values() if isinstance(p, Counting)]
    assert torch.equal(plain, hooked) and hook.forward_calls == 1
    assert counters and all(c.calls == 1 for c in counters)
    assert untouched(model, before) and no_hooks(model)
