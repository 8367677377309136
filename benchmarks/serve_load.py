"""``crossattn serve`` under load, against ``crossattn generate --maps`` with the same settings.

Starts ``crossattn serve`` (the default model), times start → ready and model loaded → first page,
then runs CLIENTS concurrent ``gradio_client`` clients × REQUESTS requests each through
``/generate`` (distinct prompts; client c uses seed c). Every response is checked: its downloads
(PNG, sidecar, maps) are byte-identical to ``crossattn generate --maps --batch-size 1`` with the same
settings, and its word overlays and maps carry its own prompt's words. Reports requests/s and the
per-request time against the CLI's. With ``--screenshots DIR`` it also drives the page and one
``.maps.html`` in headless Chromium and saves ``DIR/serve.png`` and ``DIR/maps_html.png``.

    python benchmarks/serve_load.py [--clients 4] [--requests 5] [--threads 1] [--screenshots docs]
"""

from __future__ import annotations

import argparse
import json
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


def prompts(clients: int, per_client: int) -> list[list[str]]:
    """Distinct prompts, ``per_client`` for each client."""
    out, i = [], 0
    for _ in range(clients):
        row = []
        for _ in range(per_client):
            a, b = COLOURS[i % 3], COLOURS[(i + 1) % 3]
            row.append(f"a {a} {SHAPES[i % 3]} {RELATIONS[i % 4]} a {b} {SHAPES[(i // 3 + 1) % 3]}")
            i += 1
        out.append(row)
    return out


def start_server(port: int, threads: int) -> tuple[subprocess.Popen, dict]:
    """``crossattn serve``; returns the process and its timings (start → ready, model → first page)."""
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "crossattn", "serve", "--port", str(port), "--threads", str(threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # printed once the server accepts connections
    printed = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as r:
        assert r.status == 200
    page = time.perf_counter()
    after_model = float(line.split(", ready ")[1].split(" s after start, ")[1].split(" s after")[0])
    timing = {
        "line": line.strip(),
        "start_to_ready_s": printed - start,
        "first_page_s": page - printed,
        "model_to_first_page_s": after_model + (page - printed),
    }
    return proc, timing


def client_run(url: str, seed: int, own: list[str], results: list, errors: list) -> None:
    from gradio_client import Client

    client = Client(url, verbose=False)
    for prompt in own:
        t = time.perf_counter()
        try:
            out = client.predict(prompt=prompt, seed=seed, api_name="/generate")
            results.append({"prompt": prompt, "seed": seed, "out": out, "s": time.perf_counter() - t})
        except Exception as err:  # noqa: BLE001 (count every failure)
            errors.append(f"{prompt!r}: {err}")


def cli_reference(table: list[list[str]], threads: int, out: Path) -> list[float]:
    """One ``crossattn generate --maps --batch-size 1`` per client seed; seconds per image of each."""
    per_image = []
    for seed, own in enumerate(table):
        t = time.perf_counter()
        cmd = [sys.executable, "-m", "crossattn", "generate", *own, "--seed", str(seed), "--maps", "--quiet"]
        cmd += ["--batch-size", "1", "--threads", str(threads), "--out", str(out / f"seed{seed}")]
        subprocess.run(cmd, check=True, capture_output=True)
        per_image.append((time.perf_counter() - t) / len(own))
    return per_image


def check(result: dict, cli: Path) -> list[str]:
    """Problems with one response: files not byte-identical to the CLI's, words not its prompt's."""
    problems = []
    files = [Path(p) for p in result["out"][7]]
    for path in files:
        if path.name.endswith(".maps.html"):
            continue
        reference = cli / f"seed{result['seed']}" / path.name
        if not reference.is_file() or reference.read_bytes() != path.read_bytes():
            problems.append(f"{path.name} differs from {reference}")
    words = list(dict.fromkeys(result["prompt"].split()))
    captions = [item["caption"].split(" ")[0] for item in result["out"][1]]
    maps_json = json.loads(next(p for p in files if p.name.endswith(".maps.json")).read_text())
    if captions != words or maps_json["images"][0]["prompt"] != result["prompt"]:
        problems.append(f"{result['prompt']!r}: overlays {captions}, maps of {maps_json['images'][0]['prompt']!r}")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=5, help="requests per client")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, server and CLI alike")
    parser.add_argument("--port", type=int, default=7871)
    parser.add_argument("--screenshots", metavar="DIR", help="also save DIR/serve.png and DIR/maps_html.png")
    args = parser.parse_args()
    table = prompts(args.clients, args.requests)
    work = Path(tempfile.mkdtemp(prefix="serve-load-"))
    cli_per_image = cli_reference(table, args.threads, work / "cli")

    proc, timing = start_server(args.port, args.threads)
    url = f"http://127.0.0.1:{args.port}/"
    try:
        results, errors = [], []
        t = time.perf_counter()
        client_run(url, 0, ["a red circle"], [], errors)  # first request after ready
        timing["first_generate_s"] = time.perf_counter() - t
        threads = [
            threading.Thread(target=client_run, args=(url, seed, own, results, errors))
            for seed, own in enumerate(table)
        ]
        t = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - t
        problems = [p for r in results for p in check(r, work / "cli")]
        circle = next(r for r in results if "circle" in r["prompt"].split())  # the page shows its word 'circle'
        extra = screenshots(url, Path(args.screenshots), Path(circle["out"][7][-1])) if args.screenshots else {}
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    total = args.clients * args.requests
    latency = [r["s"] for r in results]
    print(timing["line"])
    print(
        f"start to ready {timing['start_to_ready_s']:.1f} s; first page {timing['first_page_s'] * 1000:.0f} ms after "
        f"ready, {timing['model_to_first_page_s']:.2f} s after the model loaded; first /generate "
        f"{timing['first_generate_s']:.1f} s"
    )
    print(
        f"load: {args.clients} clients x {args.requests} requests: {len(results)}/{total} answered, "
        f"{len(errors)} errors, {len(problems)} mismatches; {len(results) / wall:.3f} requests/s over {wall:.1f} s"
    )
    print(
        f"per request (queued, concurrent): median {statistics.median(latency):.2f} s, max {max(latency):.2f} s; "
        f"service time (wall / requests) {wall / len(results):.2f} s"
    )
    print(
        f"CLI generate --maps --batch-size 1: {statistics.mean(cli_per_image):.2f} s per image "
        f"(process with {args.requests} prompts, model load included); server service time / CLI = "
        f"{wall / len(results) / statistics.mean(cli_per_image):.2f}"
    )
    for line in errors + problems:
        print("  ", line)
    if extra:
        print(f".maps.html (default model, 20 steps, per step + per head): {extra['maps_html_bytes'] / 1e6:.2f} MB, ")
        print(f"opened and drawn in Chromium in {extra['maps_html_open_s'] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
