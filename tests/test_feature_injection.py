"""Plug-and-Play feature injection (``EditSettings.feature_steps``): the targets take the source's decoder
ResBlock outputs; the hooks go with the control, also after an exception; the knob is checked and reaches
every surface through the one ``EditSettings``."""

from __future__ import annotations

import pytest
import torch

from crossattn.editing.control import Controller
from crossattn.editing.feature_injection import decoder_resnets
from crossattn.editing.image_edit import edit_image, invert_image
from crossattn.editing.prompt_edit import edit
from crossattn.editing.settings import GIVEN_IMAGE_DEFAULTS, GIVEN_IMAGE_KNOBS, EditSettings

from .conftest import generator


def hook_counts(unet) -> list[int]:
    return [len(resnet._forward_hooks) for resnet in decoder_resnets(unet, len(unet.up_blocks))]


def test_targets_take_the_source_resblock_outputs_while_injecting(tiny_pipe):
    """Inside the window each target row's ResBlock output is its guidance half's source row's; after it, not."""
    resnet = decoder_resnets(tiny_pipe.unet, 1)[0]
    seen: list[torch.Tensor] = []
    with Controller(tiny_pipe, "a red square", "a blue square", feature_steps=0.5, extra_rows=1) as control:
        hooks = hook_counts(tiny_pipe.unet)
        record = resnet.register_forward_hook(lambda module, args, output: seen.append(output.clone()))  # runs after
        try:
            tiny_pipe(["a red square", "a blue square", "a blue square"], generator=generator(0), num_inference_steps=4)
        finally:
            record.remove()
    first = len(tiny_pipe.unet.up_blocks[0].resnets)
    assert control.feature_stop == 2 and hooks == [1] * first + [0] * (len(hooks) - first) and len(seen) == 4
    for step, output in enumerate(seen):  # (6, C, h, w): [source, target, plain] × [uncond, cond]
        assert torch.equal(output[1], output[0]) == (step < 2) and torch.equal(output[4], output[3]) == (step < 2)
        assert not torch.equal(output[2], output[0]) and not torch.equal(output[5], output[3])  # plain row: left alone
    assert hook_counts(tiny_pipe.unet) == [0] * len(hook_counts(tiny_pipe.unet))


def test_hooks_are_removed_after_an_exception(tiny_pipe):
    control = Controller(tiny_pipe, "a red square", "a blue square", feature_steps=1.0, feature_blocks=2)
    with pytest.raises(RuntimeError, match="boom"), control:
        assert sum(hook_counts(tiny_pipe.unet)) == len(decoder_resnets(tiny_pipe.unet, 2))
        raise RuntimeError("boom")
    assert sum(hook_counts(tiny_pipe.unet)) == 0 and not tiny_pipe.unet._forward_hooks


def test_bad_feature_settings_are_refused(tiny_pipe):
    for bad in ({"feature_steps": 1.5}, {"feature_steps": True}, {"feature_blocks": 0}, {"feature_blocks": 1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            EditSettings(**bad)
    blocks = len(tiny_pipe.unet.up_blocks)
    with pytest.raises(ValueError, match=f"feature_blocks is {blocks + 1}; this U-Net has {blocks}"):
        Controller(tiny_pipe, "a red square", "a blue square", feature_steps=0.5, feature_blocks=blocks + 1)


def test_generated_edits_inject_nothing_by_default(tiny_pipe):
    """A generated edit's settings leave ``feature_steps`` unset: no hook, no sidecar entry (a given image's knob)."""
    assert EditSettings().feature_steps is None and EditSettings().feature_fraction == 0.0
    assert "feature_steps" in GIVEN_IMAGE_KNOBS
    assert Controller(tiny_pipe, "a red square", "a blue square").features is None
    a = edit(tiny_pipe, "a red square", "a blue square", num_inference_steps=3, generator=generator(1))
    b = edit(
        tiny_pipe, "a red square", "a blue square", feature_steps=0.0, num_inference_steps=3, generator=generator(1)
    )
    assert a.edited.tobytes() == b.edited.tobytes()


def test_given_image_edits_take_the_default_and_a_chosen_value(tiny_pipe, picture):
    """``edit_image`` (the API, the CLI's and the explorer's path) resolves ``None`` to the given-image default."""
    given = invert_image(tiny_pipe, picture, "a red square", num_inference_steps=4)
    chosen = edit_image(tiny_pipe, given, "a red square", "a blue square", plain=False)
    assert chosen.result.settings.feature_steps == GIVEN_IMAGE_DEFAULTS["feature_steps"]
    injected = edit_image(tiny_pipe, given, "a red square", "a blue square", plain=False, feature_steps=1.0)
    assert injected.result.settings.feature_steps == 1.0
    assert injected.result.edited.tobytes() != chosen.result.edited.tobytes()
    assert sum(hook_counts(tiny_pipe.unet)) == 0
