"""``crossattn serve``: the web explorer (a Gradio page) on http://127.0.0.1:7860.

The model loads once, before the server starts (``--dtype`` on ``--device``; images are sampled
at ``--height`` × ``--width``, checked against the model then); the page then answers at once.
Gradio is imported here only, so no other command pays for it. Prints one line when serving:
``crossattn serve: http://127.0.0.1:7860 (Gradio imported in .. s, model loaded in .. s, ready .. s
after start, .. s after the model)``.
"""

from __future__ import annotations

import argparse
import sys
import time

from ..errors import RunFailed
from .flags import add_device_flags, add_lora_flag, add_model_flag, add_size_flags, positive_int


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "serve",
        help="the web explorer: generate and click through attention maps in a browser",
        description="A local Gradio page: generate an image, see every word's map, steps, heads, and click a "
        "pixel for its self-attention. Also an API: gradio_client.Client(url).predict(prompt=..., "
        "api_name='/generate'). Needs the [web] extra.",
    )
    add_model_flag(p, "a diffusers pipeline folder (default: the shipped model)")
    add_lora_flag(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 exposes it (default: %(default)s)")
    p.add_argument("--port", type=positive_int, default=7860, help="port (default: %(default)s)")
    p.add_argument(
        "--max-queue",
        type=positive_int,
        default=16,  # web.app.MAX_QUEUE (the web package is not imported to build the parser)
        metavar="N",
        help="requests waiting at most; past that a request is answered 'busy, retry' at once (default: %(default)s)",
    )
    add_size_flags(p)
    add_device_flags(p, quiet=False)
    return p


def run(args: argparse.Namespace) -> int:
    from .shared import check_device

    start = time.perf_counter()
    check_device(args.device)
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    try:
        from ..web.app import build_app, launch
        from ..web.session import Explorer
    except ImportError as err:
        raise RunFailed(
            f"crossattn serve needs Gradio ({err}); install it with: pip install 'crossattn[web]'"
        ) from None

    imported = time.perf_counter()
    explorer = Explorer.load(args.model, args.lora, args.device, dtype=args.dtype, height=args.height, width=args.width)
    loaded = time.perf_counter()
    app = build_app(explorer)
    _, url, _ = launch(app, host=args.host, port=args.port, block=False, max_queue=args.max_queue)
    ready = time.perf_counter()
    sys.stdout.write(
        f"crossattn serve: {url} (Gradio imported in {imported - start:.1f} s, model loaded in "
        f"{loaded - imported:.1f} s, ready {ready - start:.1f} s after start, {ready - loaded:.1f} s after the model)\n"
    )
    sys.stdout.flush()
    try:
        app.block_thread()
    except KeyboardInterrupt:
        app.close()
        raise
    return 0
