"""``crossattn serve`` under load, with bad requests mixed in, against ``crossattn generate --maps``.

Starts ``crossattn serve`` on the default model (``--max-queue``, ``--threads``), then CLIENTS concurrent
``gradio_client`` clients send REQUESTS requests in all, one at a time each; every BAD_EVERY-th is bad (an
empty or too long prompt, steps 0, seed 'abc', guidance -1, height 7, an unknown scheduler, a text file or a
truncated PNG as the upload, a server path as the upload, an empty edit target on ``/edit``). The good ones
ask ``/generate`` for a prompt of a small pool, seed 0 or 1, at ``--steps``; their downloads (PNG, sidecar,
maps) must be byte-identical to ``crossattn generate --maps --batch-size 1`` with the same settings, and
their word overlays their prompt's words. A "busy, retry" answer (the queue is full) is counted, and the
client retries after a second, as the answer says; latency is that of the answered try. Prints a table:
answers of each kind, p50 / p95 latency, the server's RSS (VmRSS of its process, sampled every 0.25 s)
at start, peak and end, the size of Gradio's file cache, and a good request answered after the load.
With ``--screenshots DIR`` it also drives the page and one ``.maps.html`` in headless Chromium and
saves ``DIR/serve.png`` and ``DIR/maps_html.png``.

    python benchmarks/serve_load.py [--clients 8] [--requests 500] [--steps 4] [--max-queue 4] [--screenshots docs]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

SHAPES = ["circle", "square", "triangle"]
COLOURS = ["red", "green", "blue"]
RELATIONS = ["left of", "right of", "above", "below"]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
CHROMIUM_ARGS += ["--disable-component-update", "--disable-sync", "--no-first-run"]
SEEDS = (0, 1)
RETRIES = 60  # tries of a request answered "busy"


def prompts(n: int) -> list[str]:
    """``n`` distinct two-object prompts."""
    out = []
    for i in range(n):
        a, b = COLOURS[i % 3], COLOURS[(i + 1) % 3]
        out.append(f"a {a} {SHAPES[i % 3]} {RELATIONS[i % 4]} a {b} {SHAPES[(i // 3 + 1) % 3]}")
    return out


def bad_requests(folder: Path) -> list[tuple[str, str, dict, str]]:
    """``(what, endpoint, inputs, words the answer must contain)`` for each kind of bad request."""
    from gradio_client import handle_file

    text, cut = folder / "notes.png", folder / "cut.png"
    text.write_text("not an image")
    from PIL import Image

    Image.new("RGB", (32, 32), "red").save(cut)
    cut.write_bytes(cut.read_bytes()[:60])
    return [
        ("empty prompt", "/generate", {"prompt": "  "}, "the prompt is empty"),
        ("too long prompt", "/generate", {"prompt": "a red circle " * 30}, "the prompt is too long"),
        ("steps 0", "/generate", {"steps": 0}, "steps 0 is not accepted"),
        ("seed 'abc'", "/generate", {"seed": "abc"}, "seed 'abc' is not a number"),
        ("guidance -1", "/generate", {"guidance": -1}, "guidance -1 is not accepted"),
        ("height 7", "/generate", {"height": 7}, "height 7 is not accepted"),
        ("scheduler 'plms'", "/generate", {"scheduler": "plms"}, "plms is not in the list of choices"),
        ("text file as upload", "/generate", {"image": handle_file(str(text))}, "cannot read the image 'notes.png'"),
        ("truncated PNG upload", "/generate", {"image": handle_file(str(cut))}, "cannot read the image 'cut.png'"),
        ("server path as upload", "/generate", {"image": {"path": "/etc/hostname"}}, "was not uploaded"),
        ("empty edit target", "/edit", {"target": ""}, "the edit-to prompt is empty"),
    ]


def plan(total: int, bad_every: int, pool: list[str], bad: list, steps: int) -> list[dict]:
    """The ``total`` requests in the order they are sent: good ones cycle through pool × seeds."""
    out, good = [], 0
    for i in range(total):
        if bad_every and i % bad_every == bad_every - 1:
            what, api, change, expect = bad[(i // bad_every) % len(bad)]
            out.append({"bad": what, "api": api, "inputs": {"prompt": "a red circle", "steps": 1, **change}})
            out[-1]["expect"] = expect
        else:
            prompt, seed = pool[good % len(pool)], SEEDS[(good // len(pool)) % len(SEEDS)]
            out.append({"bad": None, "api": "/generate", "inputs": {"prompt": prompt, "seed": seed, "steps": steps}})
            good += 1
    return out


class RssSampler(threading.Thread):
    """VmRSS of one process (``/proc/PID/status``) every ``every`` seconds, in MB."""

    def __init__(self, pid: int, every: float = 0.25):
        super().__init__(daemon=True)
        self.pid, self.every, self.samples, self.done = pid, every, [], threading.Event()

    def rss(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmRSS for process {self.pid}")

    def run(self) -> None:
        while not self.done.is_set():
            self.samples.append(self.rss())
            time.sleep(self.every)


def start_server(
    port: int, threads: int, max_queue: int, cache: Path, model: Path | None = None
) -> tuple[subprocess.Popen, str]:
    """``crossattn serve`` on ``model`` (default: the shipped one), Gradio's files in ``cache``; the process and its
    first line."""
    cmd = [sys.executable, "-m", "crossattn", "serve", "--port", str(port), "--threads", str(threads)]
    cmd += ["--model", str(model)] if model else []
    env = {**os.environ, "GRADIO_TEMP_DIR": str(cache)}
    proc = subprocess.Popen([*cmd, "--max-queue", str(max_queue)], stdout=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()  # printed once the server accepts connections
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # the rest, so the pipe never fills
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as r:
        assert r.status == 200
    return proc, line.strip()


def cli_reference(pool: list[str], steps: int, threads: int, out: Path) -> None:
    """One ``crossattn generate --maps --batch-size 1`` per seed, all pool prompts, into ``out/seed<S>``."""
    for seed in SEEDS:
        cmd = [sys.executable, "-m", "crossattn", "generate", *pool, "--seed", str(seed), "--maps", "--quiet"]
        cmd += [
            "--steps",
            str(steps),
            "--batch-size",
            "1",
            "--threads",
            str(threads),
            "--out",
            str(out / f"seed{seed}"),
        ]
        subprocess.run(cmd, check=True, capture_output=True)


def ask(client, request: dict) -> dict:
    """Send one request; its outcome: good, clear (a bad one answered naming its value), unclear, busy, failed."""
    from gradio_client.exceptions import AppError
    from gradio_client.utils import QueueError

    t = time.perf_counter()
    outcome = {"request": request, "out": None}
    try:
        outcome["out"] = client.predict(**request["inputs"], api_name=request["api"])
        outcome["kind"] = "good" if request["bad"] is None else "unclear"  # a bad request that was served
    except QueueError as err:
        outcome["kind"], outcome["error"] = "busy", str(err)
    except AppError as err:
        clear = request["bad"] is not None and request["expect"] in str(err)
        outcome["kind"], outcome["error"] = ("clear" if clear else "unclear"), str(err)
    except Exception as err:  # noqa: BLE001 (count every failure)
        outcome["kind"], outcome["error"] = "failed", f"{type(err).__name__}: {err}"
    outcome["s"] = time.perf_counter() - t
    return outcome


def client_run(url: str, own: list[dict], outcomes: list, busy: list) -> None:
    """One client: its requests one at a time; a busy answer is kept in ``busy`` and retried after a second,
    as it says (at most RETRIES times; then the busy answer is the request's outcome)."""
    from gradio_client import Client

    client = Client(url, verbose=False, download_files=False)  # files are fetched only where checked
    for request in own:
        for _ in range(RETRIES):
            outcome = ask(client, request)
            if outcome["kind"] != "busy":
                break
            busy.append(outcome)
            time.sleep(1.0)
        outcomes.append(outcome)


def check(outcome: dict, cli: Path) -> list[str]:
    """Problems with a good answer: a download not byte-identical to the CLI's, overlays not its words."""
    problems, inputs = [], outcome["request"]["inputs"]
    for item in outcome["out"][7]:
        name = item.get("orig_name") or Path(item["path"]).name
        if name.endswith(".maps.html"):
            continue
        reference = cli / f"seed{inputs['seed']}" / name
        with urllib.request.urlopen(item["url"], timeout=60) as r:
            served = r.read()
        if not reference.is_file() or reference.read_bytes() != served:
            problems.append(f"{name} differs from {reference}")
    words = list(dict.fromkeys(inputs["prompt"].split()))
    captions = [item["caption"].split(" ")[0] for item in outcome["out"][1]]
    if captions != words:
        problems.append(f"{inputs['prompt']!r}: overlays {captions}")
    return problems


def screenshots(url: str, folder: Path, html: Path) -> dict:
    """Drive the page and one ``.maps.html`` in headless Chromium; save the two screenshots."""
    from playwright.sync_api import sync_playwright

    folder.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url)
        page.fill("#prompt textarea", "a red circle left of a blue square")
        page.click("#generate")
        page.wait_for_function("document.querySelectorAll('#overlays img').length === 7", timeout=120_000)
        page.wait_for_function("document.querySelector('#image img').complete")
        page.wait_for_timeout(1000)
        box = page.locator("#image img").bounding_box()
        page.locator("#image img").click(position={"x": box["width"] * 0.22, "y": box["height"] * 0.6})
        page.wait_for_selector("#pixel img", timeout=60_000)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(folder / "serve.png"), full_page=True)
        t = time.perf_counter()
        page.goto(html.as_uri())
        page.wait_for_function("document.body.dataset.rendered !== undefined")
        opened = time.perf_counter() - t
        page.select_option("#word", label="circle")
        page.locator("#step").fill("9")
        page.wait_for_timeout(300)
        page.set_viewport_size({"width": 1000, "height": 640})
        page.screenshot(path=str(folder / "maps_html.png"))
        browser.close()
    return {"maps_html_open_s": opened, "maps_html_bytes": html.stat().st_size}


def load(url: str, requests: list[dict], clients: int) -> tuple[list[dict], list[dict], float]:
    """Request i goes to client i % clients; every client sends its own one at a time. Final outcomes, busy
    answers, wall s."""
    outcomes: list[dict] = []
    busy: list[dict] = []
    own = [requests[c::clients] for c in range(clients)]
    threads = [threading.Thread(target=client_run, args=(url, own[c], outcomes, busy)) for c in range(clients)]
    t = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes, busy, time.perf_counter() - t


def percentiles(outcomes: list[dict], kind: str) -> str:
    s = sorted(o["s"] for o in outcomes if o["kind"] == kind)
    if not s:
        return "none"
    p95 = s[min(len(s) - 1, round(0.95 * (len(s) - 1)))]
    return f"p50 {statistics.median(s):.2f} s, p95 {p95:.2f} s (n={len(s)})"


def table(args, line: str, outcomes: list[dict], busy: list[dict], wall, rss: list[float], after: dict, cache_mb):
    """The Markdown table the run prints (docs/benchmarks.md keeps it)."""
    kinds = {k: sum(o["kind"] == k for o in outcomes) for k in ("good", "clear", "unclear", "busy", "failed")}
    sent_bad = sum(o["request"]["bad"] is not None for o in outcomes)
    bad_kinds = len({o["request"]["bad"] for o in outcomes if o["request"]["bad"]})
    rows = [
        (
            "server",
            f"`crossattn serve` (default model) `--max-queue {args.max_queue} --threads {args.threads}`: {line}",
        ),
        (
            "requests",
            f"{len(outcomes)} from {args.clients} concurrent clients in {wall:.0f} s: {len(outcomes) - sent_bad} good "
            f"(/generate, {args.steps} steps), {sent_bad} bad ({bad_kinds} kinds)",
        ),
        (
            "good answers",
            f"{kinds['good']}, {after['identical']} of them byte-identical to `crossattn generate --maps` "
            f"(PNG, sidecar, maps) with their overlays' words right; {len(after['problems'])} mismatches",
        ),
        (
            "bad requests",
            f"{kinds['clear']} of {sent_bad} answered with an error naming the value, {kinds['unclear']} unclear",
        ),
        (
            "busy answers",
            f"{len(busy)} (`QueueError: Queue is full! Please try again.`, HTTP 503 'the server is busy ...'), each "
            f"retried after 1 s; {kinds['busy']} requests still busy after {RETRIES} tries",
        ),
        ("other failures", str(kinds["failed"])),
        ("latency, good", percentiles(outcomes, "good")),
        ("latency, bad", percentiles(outcomes, "clear")),
        ("latency, busy", percentiles(busy, "busy")),
        ("server RSS", f"start {rss[0]:.0f} MB, peak {max(rss):.0f} MB, end {rss[-1]:.0f} MB"),
        ("Gradio's file cache", f"{cache_mb:.0f} MB after the run"),
        ("after the load", f"a good request answered in {after['s']:.1f} s, byte-identical: {after['ok']}"),
    ]
    print("| what | measured |\n|---|---|")
    for what, measured in rows:
        print(f"| {what} | {measured} |")
    for o in outcomes:
        if o["kind"] in ("unclear", "failed"):
            print("  ", o["request"]["bad"] or o["request"]["inputs"]["prompt"], "->", o.get("error"))
    for problem in after["problems"][:10]:
        print("  ", problem)


def main() -> None:
    from gradio_client import Client

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=500, help="requests in all")
    parser.add_argument("--bad-every", type=int, default=5, help="every Nth request is bad (0: none)")
    parser.add_argument("--pool", type=int, default=12, help="distinct prompts of the good requests")
    parser.add_argument("--steps", type=int, default=4, help="sampling steps of the good requests")
    parser.add_argument("--max-queue", type=int, default=4, help="serve --max-queue (below --clients: some get busy)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, server and CLI alike")
    parser.add_argument("--port", type=int, default=7871)
    parser.add_argument("--screenshots", metavar="DIR", help="also save DIR/serve.png and DIR/maps_html.png")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="serve-load-"))
    pool = prompts(args.pool)
    requests = plan(args.requests, args.bad_every, pool, bad_requests(work), args.steps)
    cli_reference(pool, args.steps, args.threads, work / "cli")

    proc, line = start_server(args.port, args.threads, args.max_queue, work / "gradio")
    url = f"http://127.0.0.1:{args.port}/"
    sampler = RssSampler(proc.pid)
    sampler.start()
    try:
        outcomes, busy, wall = load(url, requests, args.clients)
        checked = [check(o, work / "cli") for o in outcomes if o["kind"] == "good"]
        t = time.perf_counter()
        final = ask(Client(url, verbose=False, download_files=False), requests[0])
        final_problems = check(final, work / "cli") if final["kind"] == "good" else [final.get("error")]
        after = {"s": time.perf_counter() - t, "ok": "yes" if not final_problems else f"no: {final_problems}"}
        after["problems"] = [p for problems in checked for p in problems]
        after["identical"] = sum(not problems for problems in checked)
        sampler.done.set()
        sampler.join()
        circle = next(o for o in outcomes if o["kind"] == "good" and "circle" in o["request"]["inputs"]["prompt"])
        html = next(item["path"] for item in circle["out"][7] if item["path"].endswith(".maps.html"))
        extra = screenshots(url, Path(args.screenshots), Path(html)) if args.screenshots else {}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    cache_mb = sum(f.stat().st_size for f in (work / "gradio").rglob("*") if f.is_file()) / 1e6
    table(args, line, outcomes, busy, wall, sampler.samples, after, cache_mb)
    if extra:
        print(
            f".maps.html (default model, {args.steps} steps, per step + per head): "
            f"{extra['maps_html_bytes'] / 1e6:.2f} MB, "
        )
        print(f"opened and drawn in Chromium in {extra['maps_html_open_s'] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
