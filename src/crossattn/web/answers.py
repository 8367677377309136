"""How the server answers a request it cannot serve, and keeps serving.

One mapping, :func:`user_error`: crossattn's errors (:class:`~crossattn.errors.CrossattnError`) and a
library ``ValueError`` become ``gr.Error`` with their message, which Gradio shows in the page and
returns to API clients (``gradio_client``'s ``AppError``); anything else is a bug, logged by Gradio and
answered "Error". Every handler goes through :func:`answering`. What Gradio itself cannot read goes
through the same mapping: the page's number boxes, scheduler choice and upload read their values
through :func:`reading`, which names the input and its value (an upload must be a file sent to this
server), and :class:`Page` answers what fails before that (a payload of the wrong shape, too few
inputs). A full queue answers at once, HTTP 503, "busy, retry" (:func:`limit_queue`) instead of
waiting without bound.
"""

from __future__ import annotations

import functools
from pathlib import Path

import gradio as gr

from ..errors import BadArgument, BadImage, CrossattnError, RunFailed

USER_ERRORS = (CrossattnError, ValueError, FileNotFoundError)  # what a request can cause; the rest are bugs
BUSY = (
    "the server is busy: {waiting} requests are waiting (at most {limit}); retry in a few seconds "
    "(crossattn serve --max-queue N waits for more)"
)


def user_error(err: BaseException) -> gr.Error:
    """``err``'s message as the ``gr.Error`` the page shows (a failed run says so in the title); the server's
    log gets no traceback for a bad request, only for a failed run."""
    failed = isinstance(err, RunFailed)
    return gr.Error(str(err), title="The run failed" if failed else "Cannot do that", print_exception=failed)


def answering(handler):
    """``handler`` with the errors a request can cause answered as :func:`user_error`."""

    @functools.wraps(handler)
    def answered(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except gr.Error:
            raise
        except USER_ERRORS as err:
            raise user_error(err) from None
        finally:
            release_freed_memory()

    return answered


def release_freed_memory() -> None:
    """Hand the memory a request freed back to the system (glibc's ``malloc_trim``; nothing elsewhere):
    each request frees its pipeline copy, tracer and maps, which glibc's arenas otherwise keep, so a
    long-running server's resident memory grew with the requests it had answered."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, looked up once (``find_library`` runs a subprocess); None without glibc."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(name), "malloc_trim", None) if name and "libc" in name else None


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _name(component) -> str:
    return (component.label or component.elem_id or "a value").split(" (")[0]  # "sampling step (0 = mean)"


def _value(component, read, payload):
    """``read(payload)`` (Gradio's own ``preprocess``), its failures a message naming the input and the value."""
    try:
        return read(payload)
    except gr.Error as err:  # Gradio's own checks ("Value 5 is greater than maximum value 1.", a choice not offered)
        raise user_error(BadArgument(f"{_name(component)} {_shown(payload)} is not accepted: {err.message}")) from None
    except (TypeError, ValueError, OverflowError):
        raise user_error(BadArgument(f"{_name(component)} {_shown(payload)} is not a number")) from None


def _image(component, read, payload):
    """``read(payload)`` for a file uploaded to this server only (not any path the server can open), a file
    Pillow cannot decode a message naming it."""
    if payload is None:
        return None
    name = payload.orig_name or Path(payload.path or "").name
    uploads = Path(component.GRADIO_CACHE).resolve()
    if payload.path is None or uploads not in Path(payload.path).resolve().parents:
        message = f"the image {name!r} was not uploaded to this server; send the file (gradio_client: handle_file)"
        raise user_error(BadImage(message))
    try:
        image = read(payload)
        if hasattr(image, "load"):
            image.load()  # Pillow opens lazily: a body damaged past a whole header shows only when decoded
        return image
    except gr.Error:
        raise
    except Exception as err:  # noqa: BLE001 (Pillow raises many kinds for a broken file)
        message = f"cannot read the image {name!r}: not an image Pillow can decode ({type(err).__name__})"
        raise user_error(BadImage(message)) from None


def reading(component):
    """``component`` with what Gradio cannot read of it answered as a message naming it and the value, if it is
    a ``gr.Number``, ``gr.Slider``, ``gr.Dropdown`` or ``gr.Image`` (text boxes and check boxes read anything). Its own
    ``preprocess`` is wrapped on the instance: a subclass would make Gradio write a ``.pyi`` stub beside this
    file at import. Only for inputs no event updates (an update gives the tab a new, plain copy)."""
    if isinstance(component, gr.Image):
        component.preprocess = functools.partial(_image, component, component.preprocess)
    elif isinstance(component, (gr.Number, gr.Slider, gr.Dropdown)):
        component.preprocess = functools.partial(_value, component, component.preprocess)
    return component


class Page(gr.Blocks):
    """The page's Blocks: a request whose inputs Gradio cannot read at all is answered with what was wrong."""

    async def preprocess_data(self, block_fn, inputs, *args, **kwargs):
        try:
            return await super().preprocess_data(block_fn, inputs, *args, **kwargs)
        except gr.Error:
            raise
        except Exception as err:  # noqa: BLE001 (pydantic, Gradio's own checks: all mean a malformed request)
            errors = getattr(err, "errors", None)
            detail = str(err).split("\n")[0]
            if callable(errors) and errors():  # pydantic: the value and what was expected
                first = errors()[0]
                detail = f"{_shown(first.get('input'))}: {first.get('msg')}"
            where = f"/{block_fn.api_name}" if block_fn.api_name else (block_fn.name or "this event")
            raise user_error(BadArgument(f"cannot read the request to {where}: {detail}")) from None


def limit_queue(app: gr.Blocks, max_size: int) -> None:
    """Gradio's queue for ``app``: the model's events one at a time, at most ``max_size`` waiting; past that,
    a request is answered at once with HTTP 503 and :data:`BUSY` (the page says "This application is
    currently busy. Please try again."; ``gradio_client`` raises ``QueueError``)."""
    app.queue(default_concurrency_limit=1, max_size=max_size)
    queue = getattr(app, "_queue", None)
    push = getattr(queue, "push", None)
    if push is None:  # another Gradio: its own "Queue is full" message stands
        return

    @functools.wraps(push)
    async def push_or_busy(*args, **kwargs):
        accepted, detail, state = await push(*args, **kwargs)
        if state == "queue_full":
            detail = BUSY.format(waiting=len(queue), limit=max_size)
        return accepted, detail, state

    queue.push = push_or_busy
