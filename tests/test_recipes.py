"""The measured default recipes: which one a config gets, and that options given win."""

import json
from pathlib import Path

import pytest

from bertfit.cli import main
from bertfit.config.recipes import DEFAULT_ENCODER_PAIRS, DEFAULT_ENCODER_SINGLE
from bertfit.config.train import TrainConfig
from bertfit.models.encoders import DEFAULT_NAME, Encoder
from tests.conftest import marker_rows, train_argv, write_rows

DEFAULT = Encoder("hf", Path("."), DEFAULT_NAME)
OTHER = Encoder("hf", Path("."), "bert-base-uncased")
D2L = Encoder("d2l", Path("."), "bert.small")
RECIPE_FIELDS = ("lr", "batch_size", "warmup_ratio", "weight_decay", "layer_lr_decay", "dropout")


def recipe_of(config: TrainConfig, encoder: Encoder) -> dict:
    resolved = config.resolve(encoder, 512)
    return {name: getattr(resolved, name) for name in RECIPE_FIELDS}


def test_default_encoder_single_texts_keep_the_sst2_recipe():
    got = recipe_of(TrainConfig(train="t.csv"), DEFAULT)
    assert got == {**DEFAULT_ENCODER_SINGLE, "batch_size": 32, "warmup_ratio": 0.1,
                   "weight_decay": 0.01, "dropout": None}  # fmt: skip


@pytest.mark.parametrize(
    "config",
    [TrainConfig(train="t.csv", pair_column="hypothesis"), TrainConfig(task="mrpc")],
    ids=["pair-column", "pair-task"],
)
def test_default_encoder_text_pairs_get_the_pairs_recipe(config):
    assert recipe_of(config, DEFAULT) == {**DEFAULT_ENCODER_PAIRS, "batch_size": 16}
    assert config.global_batch() == 16  # known before the model is loaded, for --nproc checks


def test_options_given_win_over_the_recipe():
    config = TrainConfig(train="t.csv", pair_column="b", lr=2e-5, batch_size=64, warmup_ratio=0.0)
    got = recipe_of(config, DEFAULT)
    assert (got["lr"], got["batch_size"], got["warmup_ratio"]) == (2e-5, 64, 0.0)
    assert got["weight_decay"] == DEFAULT_ENCODER_PAIRS["weight_decay"]
    assert config.global_batch() == 64


def test_other_encoders_bi_encoders_and_d2l_keep_their_literature_rates():
    pairs = TrainConfig(train="t.csv", pair_column="b")
    assert recipe_of(pairs, OTHER) == {"lr": 3e-5, "batch_size": 16, "warmup_ratio": 0.1,
                                       "weight_decay": 0.01, "layer_lr_decay": 1.0, "dropout": None}  # fmt: skip
    bi = TrainConfig(train="t.csv", pair_column="b", objective="cosine")
    assert recipe_of(bi, DEFAULT)["lr"] == 2e-5
    assert recipe_of(bi, DEFAULT)["batch_size"] == 32 == bi.global_batch()
    assert bi.resolve(DEFAULT, 512).metric == "spearman"
    assert recipe_of(TrainConfig(train="t.csv"), D2L)["lr"] == 1e-4
    assert TrainConfig(task="mrpc").resolve(DEFAULT, 512).metric == "f1"
    assert TrainConfig(train="t.csv", regression=True).resolve(DEFAULT, 512).metric == "spearman"


def test_regression_on_pairs_keeps_the_single_text_recipe():
    """The pairs recipe was measured on classification (SNLI, MRPC, RTE) only."""
    for config in (
        TrainConfig(task="stsb"),
        TrainConfig(train="t", pair_column="b", regression=True),
    ):
        assert recipe_of(config, DEFAULT)["lr"] == DEFAULT_ENCODER_SINGLE["lr"]
        assert config.global_batch() == 32


@pytest.mark.slow
def test_a_pair_run_records_the_batch_it_was_given_by_default(tiny_bert, tmp_path):
    """The run directory keeps the resolved recipe, so a resumed or reproduced run is the same."""
    train = write_rows(tmp_path / "pairs.csv", marker_rows(40, 0, pair=True))
    run = tmp_path / "run"
    argv = [*train_argv(train, tiny_bert, run), "--text-column", "premise"]
    argv += ["--pair-column", "hypothesis", "--epochs", "1", "--no-progress"]
    assert main(argv) == 0
    saved = json.loads((run / "bertfit.json").read_text())["config"]
    assert (saved["batch_size"], saved["lr"], saved["warmup_ratio"]) == (16, 3e-5, 0.1)
