"""One way to put attention processors on a model and take them off again: :class:`ProcessorHook`.

The tracer (capture), the controller (prompt-to-prompt) and null-text inversion's ``NullText`` (a hook
that installs no processor, only a pre-hook) are ``ProcessorHook`` s: context managers whose state lives
on the hook object (DAAM's rule). A hook that acts per sampling step is told the step by the sampling
loop (:mod:`crossattn.attention.steps`). On entry a hook saves the model's
processors, installs its own on the layers it works on through the public
``model.set_attn_processor`` (never by patching ``forward``: every other layer keeps its processor
object, fused attention included) and adds its forward hooks, each with its undo. On exit, also
after an exception, it puts back the very same processor objects and undoes the rest. Entering a
hook that is already in, or a second hook of one kind on one model, raises instead of stacking
silently; hooks of different kinds compose (a control inside a trace wraps the capture processors it
finds, and gives them back on exit).

``model`` is anything with diffusers' processor API (``attn_processors``, ``set_attn_processor``):
a ``UNet2DConditionModel`` today; the joint-attention transformers of SD3 and Flux
(``pipe.transformer``) have the same API, so a joint-attention capture is one more subclass with its
own :meth:`ProcessorHook.prepare`.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import ClassVar

from ..errors import HookError


def unet_of(target):
    """The U-Net of a diffusers pipeline (or ``target`` itself when it is the U-Net)."""
    from .families import EDIT_NEEDS_UNET, family_of

    unet = getattr(target, "unet", target)
    if unet is target and getattr(target, "transformer", None) is not None:
        family = family_of(target.transformer)
        why = family.edit_refusal() if family is not None else EDIT_NEEDS_UNET.format(name=type(target).__name__)
        raise ValueError(f"{type(target).__name__} is not supported here: {why}")
    if not hasattr(unet, "set_attn_processor") or not hasattr(unet, "attn_processors"):
        raise ValueError(
            f"cannot trace {type(target).__name__}: expected a diffusers pipeline with a UNet2DConditionModel "
            "`unet`, or the UNet itself"
        )
    return unet


def denoiser_of(target):
    """The denoiser of a diffusers pipeline: its U-Net, or the joint-attention ``transformer`` of an SD3 /
    Flux pipeline; or ``target`` itself when it is one."""
    from .families import family_of, pipeline_denoiser
    from .layers import is_joint

    model = pipeline_denoiser(target) or target
    has_api = hasattr(model, "attn_processors") and hasattr(model, "set_attn_processor")
    if has_api and (family_of(model) is not None or is_joint(model) or model is target):
        return model
    raise ValueError(
        f"cannot trace {type(target).__name__}: expected a diffusers pipeline whose denoiser is a "
        "UNet2DConditionModel (SD-1.5, SDXL, crossattn) or a transformer of a traced family (SD3, SD3.5, Flux, "
        "Flux.2, Qwen-Image, PixArt-Σ, Sana), "
        "or that denoiser itself"
    )


def installed(model, kind: type[ProcessorHook]) -> bool:
    """Whether a ``kind`` hook is on ``model``: one of its processors, or a forward hook bound to one
    (a hook that installs no processor on some settings still adds its step hooks)."""
    if any(isinstance(p, kind.processor_type) for p in model.attn_processors.values()):
        return True
    hooks = [*model._forward_pre_hooks.values(), *model._forward_hooks.values()]
    return any(isinstance(getattr(hook, "__self__", None), kind) for hook in hooks)


class ProcessorHook:
    """Base of the context managers that install attention processors on ``model`` (see the module docstring).

    A subclass says which processors it installs (:meth:`prepare`), what else it adds
    (:meth:`add_hooks`) and what state one installation leaves to clear (:meth:`reset`)."""

    #: the processor class (or tuple of classes) this hook installs: none may be left on the model after the restore
    processor_type: ClassVar[type | tuple[type, ...]]
    #: the error raised for misuse (a :class:`HookError`)
    error: ClassVar[type[HookError]] = HookError
    #: what the hook is called in messages
    noun: ClassVar[str] = "hook"

    def __init__(self, model) -> None:
        self.model = model
        self._undo: ExitStack | None = None  # set while installed: what puts the model back

    @property
    def is_installed(self) -> bool:
        return self._undo is not None

    def prepare(self, current: dict) -> dict:
        """Start one installation; return the processors to install by key of ``model.attn_processors``
        (``current``: the ones there now). A layer it cannot stand in for is a ``ValueError``, raised
        before anything on the model changes."""
        raise NotImplementedError

    def add_hooks(self, undo: ExitStack) -> None:
        """Add forward hooks or other reversible changes, pushing each undo onto ``undo``; none by default."""

    def check_free(self) -> None:
        """Raise :attr:`error` when the model already has a hook of this kind."""
        if installed(self.model, type(self)):
            raise self.error(f"this model already has a {self.noun} installed; exit the other {self.noun} first")

    def reset(self) -> None:
        """Clear what one installation left on the hook object; called after every restore."""

    def __enter__(self):
        if self.is_installed:
            raise self.error(f"this {self.noun} is already installed; a {self.noun} can be entered once at a time")
        self.check_free()
        saved = dict(self.model.attn_processors)
        processors = {**saved, **self.prepare(saved)}
        self._undo = undo = ExitStack()
        try:
            undo.callback(self._put_back, saved)  # first pushed, last undone; also after a failed install
            self.model.set_attn_processor(processors)
            self.add_hooks(undo)
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def _put_back(self, saved: dict) -> None:
        self.model.set_attn_processor(dict(saved))  # the dict is consumed: pass a copy

    def _restore(self) -> None:
        """Undo everything (each undo runs even if an earlier one raised), then check no processor of ours is left."""
        undo, self._undo = self._undo, None
        try:
            if undo is not None:
                undo.close()
        finally:
            self.reset()
            for processor in self.model.attn_processors.values():
                if isinstance(processor, self.processor_type):  # cannot happen; never leave one behind
                    raise self.error(f"a {type(processor).__name__} survived the restore")
