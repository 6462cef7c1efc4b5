"""Bi-encoder runs are first-class: intervals in results.json, a report, a card, bertfit.load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bertfit.cli.main import main
from tests.conftest import write_rows
from tests.test_biencoder import pair_rows, pair_training
from tests.test_cli import FAST

METRIC = {"cosine": "spearman", "contrastive": "recall_at_1", "softmax": "accuracy"}
FIGURES = {
    "cosine": {"scatter.png"},
    "contrastive": set(),
    "softmax": {"confusion.png", "calibration.png"},
}


@pytest.fixture(scope="module")
def bi_runs(tiny_bert, tmp_path_factory) -> dict[str, Path]:
    """One short run per objective, shared by the tests that only read them."""
    root = tmp_path_factory.mktemp("bi")
    runs = {}
    for objective in METRIC:
        train = write_rows(root / f"{objective}.jsonl", pair_rows(160, 1, objective))
        out = root / objective
        args = [*pair_training(train, tiny_bert, out, objective), "--dev-fraction", "0.25"]
        assert main([*args, "--epochs", "2", *FAST[2:]]) == 0
        runs[objective] = out
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("objective", list(METRIC))
def test_results_card_and_report_carry_intervals(bi_runs, objective):
    run, metric = bi_runs[objective], METRIC[objective]
    results = json.loads((run / "results.json").read_text())
    low, high = results["dev_ci"][metric]
    assert low <= high and low - 0.05 <= results["dev"][metric] <= high + 0.05
    assert results["precision"] in ("bf16", "fp32") and results["dev_examples"] == 40
    card = (run / "README.md").read_text()
    assert f"| dev | {metric} | {results['dev'][metric]:.4f} | {low:.4f} to {high:.4f} |" in card
    predictions = (run / "dev_predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 40
    for name in ("report.html", "loss.png", "metrics.png", *FIGURES[objective]):
        assert (run / name).is_file(), name
    page = (run / "report.html").read_text()
    assert f"{objective} objective" in page and f"{low:.4f} to {high:.4f}" in page
    assert "confidently wrong" in page if objective == "softmax" else "Per class" not in page


@pytest.mark.slow
def test_cosine_report_renders_the_scatter_and_rebuilds(bi_runs, tmp_path):
    from tests.test_pages import CHROMIUM, FLAGS

    run = tmp_path / "cosine"
    shutil.copytree(bi_runs["cosine"], run)
    (run / "report.html").unlink()
    (run / "scatter.png").unlink()
    assert main(["report", str(run)]) == 0  # rebuilt from the run's own files
    first = json.loads((run / "dev_predictions.jsonl").read_text().splitlines()[0])
    assert set(first) == {"text", "pair", "label", "predicted"} and -1 <= first["predicted"] <= 1
    if not Path(CHROMIUM).exists():
        pytest.skip("needs Debian's chromium to open the page")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((run / "report.html").resolve().as_uri())
        images = page.locator("img").evaluate_all(
            "els => els.map(e => [e.getAttribute('src'), e.complete && e.naturalWidth > 0])"
        )
        farthest = page.locator("#farthest + table tr").count()
        browser.close()
    assert errors == [] and all(ok for _, ok in images)
    assert "scatter.png" in [src for src, _ in images] and farthest == 21  # header + 20


def test_load_gives_an_embedder_and_run_load_names_load_embedder(bi_runs, capsys):
    import bertfit
    from bertfit.errors import ModelError
    from bertfit.inference.embed import Embedder
    from bertfit.inference.run import load

    run = bi_runs["cosine"]
    embedder = bertfit.load(run, device="cpu")
    assert isinstance(embedder, Embedder)
    assert embedder.encode(["great music", "the ending"]).shape == (2, 32)
    assert embedder.similarity(["great music"], ["the great song"]).shape == (1,)
    assert isinstance(bertfit.load(run, device="cpu", checkpoint="best"), Embedder)
    with pytest.raises(ModelError, match=r"bertfit\.load_embedder\("):
        load(run)
    capsys.readouterr()
    assert main(["predict", str(run), "--text", "x"]) == 2
    assert "bertfit.load_embedder(" in capsys.readouterr().err


@pytest.mark.slow
def test_fp32_gives_sentence_transformers_vectors_and_bf16_is_close(bi_runs):
    from sentence_transformers import SentenceTransformer

    import bertfit

    run = str(bi_runs["cosine"])
    texts = ["great music and a long story", "the ending", "one", "an awful film with a song"]
    theirs = SentenceTransformer(run, device="cpu").encode(texts)
    fp32 = bertfit.load_embedder(run, device="cpu", precision="fp32").encode(texts)
    bf16 = bertfit.load_embedder(run, device="cpu", precision="bf16").encode(texts)
    assert np.abs(fp32 - theirs).max() < 1e-5
    assert 0 < np.abs(bf16 - theirs).max() < 0.02
