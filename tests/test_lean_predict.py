"""Prediction without transformers: a plain BERT run's weights in a mirror of its modules and its
tokenizer read from tokenizer.json give the same ids and probabilities as transformers' model,
anything else falls back to transformers, and a one-sentence predict imports neither
transformers nor (for ``import bertfit``) torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bertfit.cli.main import main
from tests.conftest import marker_rows, train_argv, write_rows

QUICK = ["--epochs", "1", "--batch-size", "16", "--lr", "3e-3", "--warmup-ratio", "0"]
QUICK += ["--max-length", "32", "--threads", "1", "--no-progress", "--seed", "1"]
TEXTS = ["a great film", "the plot was long and the ending awful", "one", "great [SEP] Ünïcode"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tiny_bert, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lean")
    train = write_rows(root / "train.csv", marker_rows(32, seed=3))
    out = root / "run"
    assert main([*train_argv(train, tiny_bert, out), *QUICK]) == 0
    return out


def transformers_logits(run_dir: Path, texts: list[str]) -> np.ndarray:
    """What the run computes through transformers' own model and tokenizer."""
    import torch

    import bertfit
    from bertfit.data.packing import HFTokenizer
    from bertfit.inference.run import compute_logits
    from bertfit.models.classifier import load_classifier
    from bertfit.runtime import pick_precision

    model, tokenizer = load_classifier(run_dir, "hf")
    assert isinstance(tokenizer, HFTokenizer)
    packed = bertfit.load(run_dir, device="cpu").pack(texts)
    # as bertfit.load runs it on this machine (bf16 autocast where the CPU has it)
    dtype = pick_precision("auto", torch.device("cpu"))
    return compute_logits(model.eval(), packed, tokenizer.pad_token_id, dtype=dtype)


@pytest.mark.slow
def test_lean_run_predicts_what_transformers_predicts(run):
    import bertfit
    from bertfit.data.tokenizer_file import RustTokenizer
    from bertfit.models.classifier import load_classifier

    loaded = bertfit.load(run, device="cpu")
    assert loaded.torch_model is None  # the mirror predicts; transformers' model is not loaded
    assert isinstance(loaded.tokenizer, RustTokenizer)
    _, hf_tokenizer = load_classifier(run, "hf")
    assert loaded.tokenizer.encode_batch(TEXTS) == hf_tokenizer.encode_batch(TEXTS)
    assert loaded.tokenizer.fingerprint() == hf_tokenizer.fingerprint()
    assert np.abs(loaded.logits(TEXTS) - transformers_logits(run, TEXTS)).max() < 1e-6
    assert loaded.predict(TEXTS)[0]["label"] in ("neg", "pos")


@pytest.mark.slow
def test_explain_loads_the_transformers_model_when_it_needs_it(run):
    import bertfit

    loaded = bertfit.load(run, device="cpu")
    explanation = loaded.explain("a great film", steps=4)
    assert loaded.torch_model is not None
    assert [w["word"] for w in explanation["words"]] == ["a", "great", "film"]


def copy_run(run: Path, folder: Path) -> Path:
    copy = folder / "run"
    shutil.copytree(run, copy)
    return copy


def edit_json(path: Path, change: dict) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))


@pytest.mark.parametrize(
    "change",
    [
        {"position_embedding_type": "relative_key"},
        {"hidden_act": "relu"},
        {"architectures": ["BertForMultipleChoice"]},
    ],
)
def test_models_the_mirror_does_not_compute_exactly_are_not_lean(run, tmp_path, change):
    from bertfit.models.lean_classifier import lean_config, load_lean_classifier

    copy = copy_run(run, tmp_path)
    assert lean_config(copy) is not None
    edit_json(copy / "config.json", change)
    assert lean_config(copy) is None
    assert load_lean_classifier(copy) is None


def test_weights_that_do_not_fit_the_mirror_are_not_lean(run, tmp_path):
    from safetensors.torch import load_file, save_file

    from bertfit.models.lean_classifier import load_lean_classifier

    copy = copy_run(run, tmp_path)
    assert load_lean_classifier(copy) is not None
    state = load_file(str(copy / "model.safetensors"))
    state["bert.extra.weight"] = state["classifier.weight"].clone()
    save_file(state, str(copy / "model.safetensors"))
    assert load_lean_classifier(copy) is None


@pytest.mark.parametrize(
    "change",
    [{"do_lower_case": False}, {"tokenizer_class": "RobertaTokenizer"}, {"cls_token": "<s>"}],
)
def test_tokenizers_that_transformers_would_change_are_left_to_it(run, tmp_path, change):
    from bertfit.data.tokenizer_file import load_tokenizer_file

    copy = copy_run(run, tmp_path)
    assert load_tokenizer_file(copy) is not None
    edit_json(copy / "tokenizer_config.json", change)
    assert load_tokenizer_file(copy) is None


def test_tokenizer_survives_pickling(run):
    import pickle

    from bertfit.data.tokenizer_file import load_tokenizer_file

    tokenizer = load_tokenizer_file(run)
    copy = pickle.loads(pickle.dumps(tokenizer))
    assert copy.encode_batch(TEXTS) == tokenizer.encode_batch(TEXTS)
    assert copy.fingerprint() == tokenizer.fingerprint()


def imported_modules(code: str) -> set[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sys.modules))"],
        capture_output=True, text=True, env=env, timeout=120, check=True,
    )  # fmt: skip
    return set(out.stdout.split())


@pytest.mark.slow
def test_import_bertfit_does_not_import_torch():
    modules = imported_modules("import bertfit")
    assert "bertfit" in modules
    assert "torch" not in modules and "transformers" not in modules


@pytest.mark.slow
def test_one_sentence_predict_does_not_import_transformers(run):
    code = f"from bertfit.cli.main import main; assert main(['predict', {str(run)!r}, '--text', 'a great film']) == 0"
    modules = imported_modules(code)
    assert "torch" in modules
    assert "transformers" not in modules and "torch._dynamo" not in modules
