"""The sampling step, handed down by the loop to the hooks on a pipeline's denoiser.

A hook that acts per step (prompt-to-prompt's windows, null-text inversion's fitted states) is told the
step by the sampling loop instead of working it out from the timesteps it sees:

- :class:`~crossattn.models.pipeline.CrossAttnPipeline`'s loop calls :func:`announce` before each step's
  U-Net pass (its class says so: ``announces_steps``);
- a stock diffusers pipeline is told through its ``callback_on_step_end``: while a hook listens, its calls
  go through :func:`watch_calls`' subclass, which says "step 0" as the call starts and chains a callback
  that says "step i + 1" after step ``i``, before handing the tensors on to the caller's own callback.

Where no loop can tell — a bare U-Net called by hand, or a pipeline whose ``__call__`` has no
``callback_on_step_end`` — :meth:`LoopStep.take` counts the steps from the timesteps (a timestep above
the last one starts a sampling): the one place that still does.

The pipeline object carries the listeners and watchers (instance attributes) while hooks are in, and
its class is swapped once however many hooks watch it; the last one out puts everything back, in any
order of exit.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from contextlib import ExitStack

import torch

LISTENERS = "_crossattn_step_listeners"  # on the pipeline object: [callable(step)] while hooks listen
WATCHERS = "_crossattn_call_watchers"  # on the pipeline object: [callable(call, pipe, args, kwargs)]


def announce(pipe, step: int) -> None:
    """Tell the hooks listening on ``pipe`` that the next denoiser calls belong to sampling step ``step``."""
    for listener in tuple(getattr(pipe, LISTENERS, ())):
        listener(step)


def hands_down_steps(pipe) -> bool:
    """Whether ``pipe``'s sampling loop tells its hooks the step: ours always, a stock pipeline through its
    ``callback_on_step_end``; a bare denoiser never."""
    if getattr(type(pipe), "announces_steps", False):
        return True
    if isinstance(pipe, torch.nn.Module) or not callable(pipe):
        return False
    return "callback_on_step_end" in inspect.signature(type(pipe).__call__).parameters


class LoopStep:
    """The step each denoiser call of one hook belongs to: as the loop handed it down, else counted from the
    timesteps (see the module docstring). :meth:`take` also says whether the call starts a sampling."""

    def __init__(self) -> None:
        self.step: int | None = None  # the loop's last word; None: no loop has told this hook
        self._fresh = False  # a step 0 was announced and no denoiser call has taken it yet
        self._last_t: float | None = None  # the fallback's last timestep
        self._counted = 0  # the fallback's step

    def __call__(self, step: int) -> None:
        """A loop's announcement (a listener of :func:`listen`)."""
        self.step = step
        self._fresh = self._fresh or step == 0

    def listen(self, pipe, undo: ExitStack) -> bool:
        """Listen to ``pipe``'s loop until ``undo`` closes; False when it cannot tell (the fallback counts)."""
        self.step, self._fresh, self._last_t = None, False, None
        if not hands_down_steps(pipe):
            return False
        _attached(pipe, LISTENERS, self, undo)
        if not getattr(type(pipe), "announces_steps", False):
            watch_calls(pipe, None, undo)  # a stock pipeline: told through its callback_on_step_end
        return True

    def take(self, t) -> tuple[int, bool]:
        """``(step, starts a sampling)`` of a denoiser call at timestep ``t``."""
        if self.step is not None:
            fresh, self._fresh = self._fresh, False
            return self.step, fresh
        t = float(torch.as_tensor(t).flatten()[0])
        fresh = self._last_t is None or t > self._last_t
        self._last_t = t
        self._counted = 0 if fresh else self._counted + 1
        return self._counted, fresh


def _attached(pipe, name: str, item, undo: ExitStack, last_out: Callable[[], None] | None = None) -> list:
    """Add ``item`` to the list ``pipe.<name>`` until ``undo`` closes; the attribute goes with the last item
    out, which then calls ``last_out`` (whichever hook that is)."""
    items = pipe.__dict__.setdefault(name, [])
    items.append(item)

    def detach():
        items.remove(item)
        if not items:
            del pipe.__dict__[name]
            if last_out is not None:
                last_out()

    undo.callback(detach)
    return items


def watch_calls(pipe, watcher: Callable | None, undo: ExitStack) -> None:
    """Until ``undo`` closes, ``pipe(...)`` first calls ``watcher(call, pipe, args, kwargs)`` (None: only
    keep the step announcements of a stock pipeline going). The pipeline object gets a one-method subclass
    while any watcher is on it (``inspect.signature(pipe.__call__)`` still shows the pipeline's)."""
    _attached(pipe, WATCHERS, watcher, undo, last_out=functools.partial(_unwatched, pipe))
    if getattr(type(pipe), "_crossattn_watched", False):
        return  # the subclass is in already: the last watcher out puts the class back
    original = type(pipe)

    @functools.wraps(original.__call__)
    def __call__(self, *args, **kwargs):
        for watch in tuple(self.__dict__.get(WATCHERS, ())):
            if watch is not None:
                watch(original.__call__, self, args, kwargs)
        if self.__dict__.get(LISTENERS) and not getattr(original, "announces_steps", False):
            kwargs = chained_callback(self, kwargs)
            announce(self, 0)
        return original.__call__(self, *args, **kwargs)

    namespace = {"__call__": __call__, "__module__": original.__module__, "_crossattn_watched": True}
    watched = type(original.__name__, (original,), namespace)
    watched.__qualname__ = original.__qualname__
    pipe.__class__ = watched


def _unwatched(pipe) -> None:
    """Give the pipeline object its own class again (the last watcher is out)."""
    if getattr(type(pipe), "_crossattn_watched", False):
        pipe.__class__ = type(pipe).__bases__[0]


def chained_callback(pipe, kwargs: dict) -> dict:
    """``kwargs`` with a ``callback_on_step_end`` that, after step ``i``, hands the tensors to the caller's
    own callback (if any) and then announces step ``i + 1``; a diffusers ``PipelineCallback``'s tensor
    inputs are kept (the pipeline reads them off the object, which it no longer sees)."""
    own = kwargs.get("callback_on_step_end")
    kwargs = dict(kwargs)
    if own is not None and kwargs.get("callback_on_step_end_tensor_inputs") is None:
        inputs = getattr(own, "tensor_inputs", None)
        if inputs is not None:
            kwargs["callback_on_step_end_tensor_inputs"] = list(inputs)

    def callback(caller, i: int, t, tensors: dict) -> dict:
        out = own(caller, i, t, tensors) if own is not None else {}
        announce(pipe, i + 1)
        return out

    kwargs["callback_on_step_end"] = callback
    return kwargs
