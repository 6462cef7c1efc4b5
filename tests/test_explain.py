"""Explanations: word-piece merging, integrated gradients' completeness, the CLI."""

from __future__ import annotations

import json

import pytest

from bertfit.cli.main import main
from bertfit.inference.explain import merge_words
from tests.test_cli import single_run  # noqa: F401  (the shared trained tiny run)


def test_word_pieces_merge_into_words():
    tokens = ["[CLS]", "play", "##ing", "great", "[SEP]", "the", "##m", "[SEP]"]
    segments = [0, 0, 0, 0, 0, 1, 1, 1]
    scores = {
        "attention": [0.5, 0.1, 0.3, 0.2, 0.0, 0.4, 0.1, 0.0],
        "integrated_gradients": [0.0, 0.25, 0.5, -1.0, 0.0, 0.1, 0.2, 0.0],
    }
    words = merge_words(tokens, segments, scores)
    assert [(w["word"], w["segment"]) for w in words] == [("playing", 0), ("great", 0), ("them", 1)]
    assert words[0]["integrated_gradients"] == pytest.approx(0.75)  # pieces add up
    assert words[0]["attention"] == pytest.approx(0.3)  # the strongest piece


@pytest.mark.slow
def test_integrated_gradients_are_complete_and_the_marker_matters(single_run):  # noqa: F811
    import bertfit

    run = bertfit.load(single_run["dir"], device="cpu")
    result = run.explain("the great movie with a long plot")
    assert result["label"] == "pos"
    # completeness: attributions add up to the output difference from the baseline (within 5%)
    gap, total = result["output_difference"], result["attribution_sum"]
    assert abs(total - gap) <= 0.05 * abs(gap) + 1e-6
    top = max(result["words"], key=lambda w: w["integrated_gradients"])
    assert top["word"] == "great"
    tokens = [t["token"] for t in result["tokens"]]
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert sum(t["attention"] for t in result["tokens"]) == pytest.approx(1.0, abs=1e-4)


def test_explain_command(single_run, capsys):  # noqa: F811
    capsys.readouterr()
    args = ["explain", str(single_run["dir"]), "--text", "great scene", "--steps", "20"]
    assert main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [w["word"] for w in result["words"]] == ["great", "scene"] and result["steps"] == 20
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("label: ") and "integrated gradients sum to" in out
    assert main([*args, "--pair", "x"]) == 2
    assert "single texts" in capsys.readouterr().err


def test_explain_many_rows_into_a_folder(single_run, tmp_path, capsys):  # noqa: F811
    from tests.conftest import write_rows

    rows = write_rows(tmp_path / "in.tsv", [{"text": "great scene"}, {"text": "a long plot"}])
    out = tmp_path / "why"
    args = ["explain", str(single_run["dir"]), "--input", str(rows), "--steps", "8"]
    assert main([*args, "--output", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "00001.html",
        "00001.png",
        "00002.html",
        "00002.png",
        "index.html",
    ]
    assert 'href="00002.html"' in (out / "index.html").read_text()
    assert main(args) == 2  # a folder or --json is needed
    assert "--input needs --output DIR" in capsys.readouterr().err
