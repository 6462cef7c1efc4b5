"""Pages open in a real headless Chromium (installed by .ci/run), driven by Playwright."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from bertfit.cli import main
from tests.test_cli import single_run  # noqa: F401  (the shared trained tiny run)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium; .ci/run installs it"
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
]


def open_page(path: Path):
    """(page texts and attributes, console errors, screenshot PNG bytes) of a local page."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.route(
            "**/*", lambda r: r.continue_() if r.request.url.startswith("file:") else r.abort()
        )
        page.goto(path.resolve().as_uri())
        spans = page.locator("span.w").evaluate_all(
            "els => els.map(e => [e.dataset.method, e.textContent, parseFloat(e.dataset.score)])"
        )
        shot = page.screenshot(full_page=True)
        browser.close()
    return spans, errors, shot


def not_blank(png: bytes) -> bool:
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    return len(image.resize((200, 150)).getcolors(maxcolors=1 << 16) or []) > 20


def test_explanation_page_renders_with_its_scores(single_run, tmp_path, capsys):  # noqa: F811
    page = tmp_path / "why.html"
    args = ["explain", str(single_run["dir"]), "--text", "great scene", "--steps", "10"]
    assert main([*args, "--output", str(page), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert page.is_file() and (tmp_path / "why.png").is_file()
    assert "<script" not in page.read_text() and "http" not in page.read_text()  # self-contained
    spans, errors, shot = open_page(page)
    assert errors == []
    ig = [(word, score) for method, word, score in spans if method == "integrated_gradients"]
    expected = [(w["word"], w["integrated_gradients"]) for w in result["words"]]
    assert [w for w, _ in ig] == [w for w, _ in expected] == ["great", "scene"]
    assert all(abs(a - b) < 1e-5 for (_, a), (_, b) in zip(ig, expected))
    assert {m for m, _, _ in spans} == {"integrated_gradients", "attention"}
    assert not_blank(shot)
    assert not_blank((tmp_path / "why.png").read_bytes())


def test_explain_output_must_be_html(single_run, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "why.txt"
    assert main(["explain", str(single_run["dir"]), "--text", "x", "--output", str(out)]) == 2
    assert "--output must end in .html" in capsys.readouterr().err and not out.exists()
