"""A screenshot of the page that ``bertfit serve`` shows, for the README.

Starts the real server on a free port of 127.0.0.1, opens the page in headless Chromium
(Playwright), types the text, presses Enter, waits for the word highlighting (or, for an embedder,
the similarity) and saves the PNG.

Usage: ``python benchmarks/page_screenshot.py runs/sst2 docs/page.png``
(``--pair TEXT`` for a pair run or an embedder, ``--width 900``, ``--scale 2`` for a sharper image)
"""

from __future__ import annotations

import argparse
import shutil
import threading
import time
from pathlib import Path

TEXT = "a gorgeous, witty, seductive movie"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]


def start_server(run_dir: str):
    """(uvicorn server running in a daemon thread, its base URL, the thread)."""
    import uvicorn

    from bertfit.config.serve import ServeConfig
    from bertfit.serve.app import create_app, load_served

    config = ServeConfig(run_dir=run_dir, access_log=False)
    app = create_app(config, load_served(config))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise SystemExit("the server did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}", thread


def screenshot(base: str, output: Path, text: str, pair: str | None, width: int, scale: float):
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")  # Debian's; else Playwright's own download
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=FLAGS)
        page = browser.new_page(viewport={"width": width, "height": 600}, device_scale_factor=scale)
        page.goto(base + "/")
        page.wait_for_selector("body[data-kind]", state="attached")
        embedder = page.evaluate("document.body.dataset.kind") == "embedder"
        page.fill("#text", text)
        if page.locator("#pair").is_visible():
            if pair is None:
                raise SystemExit("this run compares two texts: give --pair")
            page.fill("#pair", pair)
        page.press("#text", "Enter")
        done = "#similarity:not(:empty)" if embedder else "#words .word, #explain-note:not(:empty)"
        page.wait_for_selector(f"{done}, #error:not([hidden])", timeout=300_000)
        if page.locator("#error").is_visible():
            raise SystemExit(f"the page shows an error: {page.inner_text('#error')}")
        page.evaluate("document.activeElement.blur()")  # no focus ring in the picture
        output.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(output), full_page=True)
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run directory (or an encoder such as 'default')")
    parser.add_argument("output", type=Path, help="the PNG to write")
    parser.add_argument("--text", default=TEXT)
    parser.add_argument("--pair", default=None, help="the second text (pair runs, embedders)")
    parser.add_argument("--width", type=int, default=900, help="window width in CSS pixels")
    parser.add_argument("--scale", type=float, default=1.0, help="device pixel ratio")
    args = parser.parse_args()
    server, base, thread = start_server(args.run_dir)
    try:
        screenshot(base, args.output, args.text, args.pair, args.width, args.scale)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    print(f"wrote {args.output} ({args.output.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
