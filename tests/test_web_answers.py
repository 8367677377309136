"""``crossattn serve`` stays up: every bad request, to every endpoint, is answered with a message naming
the bad value (never a bare "Error"), through ``gradio_client`` on the tiny model; the one mapping from
crossattn's errors to ``gr.Error``; a full queue answers "busy, retry" at once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from crossattn import errors

gr = pytest.importorskip("gradio")
pytest.importorskip("gradio_client")


def bad_files(folder):
    """A text file named .png, a PNG cut short, a good PNG."""
    text, cut, good = folder / "notes.png", folder / "cut.png", folder / "good.png"
    text.write_text("not an image")
    Image.new("RGB", (24, 24), "red").save(good)
    cut.write_bytes(good.read_bytes()[:60])
    return text, cut, good


def test_bad_requests_to_every_endpoint_are_messages_naming_the_value(server, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    text, cut, good = bad_files(tmp_path)
    ok = {"prompt": "a red circle", "steps": 1}
    generate = [
        ({"prompt": "  "}, "the prompt is empty"),
        ({"seed": "abc"}, "seed 'abc' is not a number"),
        ({"steps": 0}, "steps 0 is not accepted"),
        ({"steps": "many"}, "steps 'many' is not a number"),
        ({"guidance": -1}, "guidance -1 is not accepted"),
        ({"scheduler": "plms"}, "scheduler 'plms' is not accepted: Value: plms is not in the list of choices"),
        ({"height": 7}, "height 7 is not accepted"),
        ({"image": handle_file(str(good)), "strength": 5}, "strength 5 is not accepted"),
        ({"image": handle_file(str(text))}, "cannot read the image 'notes.png'"),
        ({"image": handle_file(str(cut))}, "cannot read the image 'cut.png'"),
        ({"image": {"path": str(good)}}, "the image 'good.png' was not uploaded to this server"),
        ({"image": "photo.png"}, "cannot read the request to /generate: 'photo.png'"),
    ]
    client = Client(server, verbose=False)
    client.predict(**ok, api_name="/generate")  # this tab has an image
    for change, message in generate:
        with pytest.raises(AppError, match=message):
            client.predict(**{**ok, **change}, api_name="/generate")
    edit = {"prompt": "a red circle", "steps": 1, "target": "a blue circle"}
    for change, message in (
        ({"target": ""}, "the edit-to prompt is empty"),
        ({"steps": "z"}, "steps 'z' is not a number"),
        ({"image": handle_file(str(text))}, "cannot read the image 'notes.png'"),
    ):
        with pytest.raises(AppError, match=message):
            client.predict(**{**edit, **change}, api_name="/edit")
    assert client.predict(**ok, api_name="/generate")[1][-1]["caption"].startswith("circle")  # still serving
    for api, value, message in (  # the page's own events, on this tab's image
        ("/show_step", 9, "step 9 is out of range"),
        ("/show_step", "x", "sampling step 'x' is not accepted"),
        ("/show_heads", "nope", "layer 'nope' was not recorded"),
    ):
        with pytest.raises(AppError, match=message):
            client.predict(value, api_name=api)


@pytest.mark.parametrize(
    ("raised", "title"),
    [
        (errors.BadArgument("steps 0 is not accepted"), "Cannot do that"),
        (errors.MissingFile("image x.png does not exist"), "Cannot do that"),
        (errors.HookError("a trace is already installed"), "Cannot do that"),
        (errors.RunFailed("out of memory at 4096x4096"), "The run failed"),
        (ValueError("step 3 is out of range"), "Cannot do that"),
    ],
)
def test_crossattn_errors_and_value_errors_are_messages(raised, title):
    from crossattn.web.answers import answering

    @answering
    def handler(value):
        raise raised

    with pytest.raises(gr.Error) as caught:
        handler(1)
    assert caught.value.message == str(raised) and caught.value.title == title
    assert caught.value.print_exception == (title == "The run failed")  # no traceback in the log for a bad request


def test_no_stub_is_written_beside_the_web_package(server):
    from crossattn.web import answers

    assert not Path(answers.__file__).with_suffix(".pyi").exists()  # Gradio writes one for a component subclass


def test_a_request_keeps_no_tracer_or_maps_once_answered(explorer, monkeypatch):
    """No tracer made by a request outlives it (once the first request has filled what is filled once).
    Tracers are counted while they live, in a weak set filled as each is made, after one collection:
    scanning every object of the test process, twice, took seconds once the whole suite had run in it."""
    import gc
    import weakref

    from crossattn.attention.trace import Tracer
    from crossattn.web.session import Request

    explorer.run(Request.of("a red circle", steps=1))
    made, count = weakref.WeakSet(), []
    init = Tracer.__init__

    def counted(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.add(self)
        count.append(1)

    monkeypatch.setattr(Tracer, "__init__", counted)
    for seed in range(3):
        explorer.run(Request.of("a red circle", seed=seed, steps=1))
    assert len(count) == 3, "each request makes a tracer: the weak set sees them"
    gc.collect()
    assert len(made) == 0  # was +1 a request: the per-class signature cache kept each traced class


def test_a_bug_is_not_turned_into_a_message():
    from crossattn.web.answers import answering

    @answering
    def handler():
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        handler()


def reach(job, status: str, within_s: float = 60) -> None:
    deadline = time.monotonic() + within_s
    while job.status().code.name != status:
        assert time.monotonic() < deadline, f"{status} not reached: {job.status().code.name}"
        time.sleep(0.05)


def test_a_full_queue_answers_busy_at_once():
    import httpx
    from gradio_client import Client
    from gradio_client.utils import QueueError

    from crossattn.web.answers import BUSY
    from crossattn.web.app import launch

    from .conftest import free_port

    gate = threading.Event()
    with gr.Blocks() as app:
        box = gr.Textbox()
        box.submit(lambda text: gate.wait(60) and text, box, box, api_name="wait")
    _, url, _ = launch(app, port=free_port(), block=False, max_queue=1)
    try:
        client = Client(url, verbose=False)
        running = client.submit("first", api_name="/wait")
        reach(running, "PROCESSING")
        waiting = client.submit("second", api_name="/wait")  # the one place in the queue
        reach(waiting, "IN_QUEUE")
        start = time.perf_counter()
        with pytest.raises(QueueError, match="Queue is full! Please try again"):  # gradio_client's words
            client.predict("third", api_name="/wait")
        body = {"data": ["raw"], "fn_index": 0, "session_hash": "raw-client"}
        answer = httpx.post(f"{url}gradio_api/queue/join", json=body)
        assert time.perf_counter() - start < 10  # answered at once, not after the queue drains
        assert answer.status_code == 503
        assert answer.json()["detail"] == BUSY.format(waiting=1, limit=1)
        gate.set()
        assert running.result(timeout=30) == "first" and waiting.result(timeout=30) == "second"
        assert client.predict("again", api_name="/wait") == "again"
    finally:
        gate.set()
        app.close()


def test_serve_max_queue_flag():
    from crossattn.cli import build_parser
    from crossattn.web.app import MAX_QUEUE

    parser = build_parser()
    assert parser.parse_args(["serve"]).max_queue == MAX_QUEUE
    assert parser.parse_args(["serve", "--max-queue", "3"]).max_queue == 3
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--max-queue", "0"])
