"""``bertfit export RUN --format hf --output DIR``: exactly what a model hub needs, loadable by
transformers (or sentence-transformers) with the run's own outputs; refusals in one line."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from bertfit.cli.main import main
from tests.conftest import marker_rows, write_rows

QUICK = ["--epochs", "2", "--batch-size", "16", "--lr", "3e-3", "--warmup-ratio", "0"]
QUICK += ["--max-length", "32", "--threads", "1", "--no-progress", "--seed", "1"]
TEXTS = ["a great film", "the plot was long and the ending awful", "one"]


@pytest.fixture(scope="module")
def run(tiny_bert, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export")
    train = write_rows(root / "train.csv", marker_rows(48, seed=1))
    out = root / "run"
    argv = ["train", "--train", str(train), "--model", str(tiny_bert), "--output", str(out)]
    assert main([*argv, *QUICK, "--keep-checkpoints"]) == 0  # checkpoints must not be exported
    return out


def export(run_dir: Path, output: Path, *extra: str) -> int:
    return main(["export", str(run_dir), "--format", "hf", "--output", str(output), *extra])


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.slow
def test_export_writes_only_what_a_hub_needs_and_transformers_loads_it(run, tmp_path, capsys):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import bertfit
    from bertfit.inference.run import compute_logits

    out = tmp_path / "hub" / "model"
    old = os.umask(0o022)
    try:
        assert export(run, out) == 0
    finally:
        os.umask(old)
    assert listing(out) == [
        "README.md",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert f"wrote {out}: model.safetensors, config.json" in capsys.readouterr().err
    for name in listing(out):
        assert (out / name).read_bytes() == (run / name).read_bytes(), name
        assert not os.path.samefile(out / name, run / name)  # a copy: editing it leaves the run
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert listing(out.parent) == ["model", *(f"model/{n}" for n in listing(out))]  # no temporaries
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    inputs = AutoTokenizer.from_pretrained(out)(TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        theirs = model(**inputs).logits.numpy()
    ours = bertfit.load(run, device="cpu")
    logits = compute_logits(ours.model, ours.pack(TEXTS), ours.tokenizer.pad_token_id, dtype=None)
    assert np.abs(theirs - logits).max() < 1e-5
    assert model.config.id2label == {0: "neg", 1: "pos"}


def test_export_refuses_a_non_empty_output_unless_overwrite(run, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert export(run, out) == 2
    assert capsys.readouterr().err == (
        f"bertfit: error: --output {out}: directory exists and is not empty; pass --overwrite to "
        "replace it\n"
    )
    assert (out / "notes.txt").read_text() == "mine"
    assert export(run, out, "--overwrite") == 0
    assert "notes.txt" not in listing(out) and "model.safetensors" in listing(out)
    assert listing(tmp_path) == ["mine", *(f"mine/{n}" for n in listing(out))]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert export(run, empty) == 0  # an empty folder is filled without --overwrite


@pytest.mark.parametrize("where", ["run", "inside", "parent"])
def test_export_never_writes_over_or_into_the_run(run, where, capsys):
    output = {"run": run, "inside": run / "hub", "parent": run.parent}[where]
    before = listing(run)
    assert export(run, output, "--overwrite") == 2
    assert "must be outside the run directory" in capsys.readouterr().err
    assert listing(run) == before


def test_export_refuses_an_unfinished_run(run, tmp_path, capsys):
    cut = tmp_path / "cut"
    shutil.copytree(run, cut)
    (cut / "results.json").unlink()
    assert export(cut, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bertfit: error: {cut}: the run did not finish (no results.json)")
    assert f"bertfit train --resume {cut}" in err and "--checkpoint" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "out").exists()


def test_export_refuses_a_d2l_run_saying_why(run, tmp_path, capsys):
    d2l = tmp_path / "d2l"
    shutil.copytree(run, d2l, ignore=shutil.ignore_patterns("checkpoint-*"))
    meta = json.loads((d2l / "bertfit.json").read_text())
    meta["encoder"]["kind"] = "d2l"
    (d2l / "bertfit.json").write_text(json.dumps(meta))
    assert export(d2l, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "bertfit's own format" in err and "transformers cannot load" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "out").exists()


def test_export_format_lists_its_choices(run, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(run), "--format", "tflite", "--output", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--format {hf,onnx}" in err and "invalid choice: 'tflite'" in err


@pytest.mark.slow
def test_a_bi_encoder_export_loads_in_sentence_transformers(tiny_bert, tmp_path, cache_env):
    from sentence_transformers import SentenceTransformer

    from bertfit.inference.embed import load_embedder
    from tests.test_biencoder import pair_rows, pair_training

    train = write_rows(tmp_path / "pairs.csv", pair_rows(40, 1, "softmax"))
    run_dir, out = tmp_path / "run", tmp_path / "hub"
    argv = pair_training(train, tiny_bert, run_dir, "softmax")
    assert main([*argv, "--normalize", "--pooling", "cls", *QUICK]) == 0
    assert (run_dir / "nli_head.safetensors").is_file()  # the softmax head: not for the hub
    assert export(run_dir, out) == 0
    assert listing(out) == sorted(
        [
            "1_Pooling",
            "1_Pooling/config.json",
            "2_Normalize",
            "README.md",
            "config.json",
            "model.safetensors",
            "modules.json",
            "sentence_bert_config.json",
            "tokenizer.json",
            "tokenizer_config.json",
        ]
    )
    ours = load_embedder(str(run_dir), device="cpu", precision="fp32").encode(TEXTS)
    theirs = SentenceTransformer(str(out), device="cpu").encode(TEXTS)
    assert np.abs(ours - theirs).max() < 1e-5
