"""Search spaces for ``bertfit tune``: specs, files, named and default spaces, bad input."""

from __future__ import annotations

import dataclasses
import json

import pytest

from bertfit.config.fields import changed_fields
from bertfit.config.train import TrainConfig
from bertfit.errors import ConfigError
from bertfit.tuning.space import (
    Param,
    default_space,
    load_space,
    parse_spec,
    suggest,
)


class FixedTrial:
    """Optuna's suggest_* methods, answering the low end of each range and the first choice."""

    def __init__(self) -> None:
        self.asked: list[tuple] = []

    def suggest_float(self, name, low, high, log=False):
        self.asked.append(("float", name, low, high, log))
        return low

    def suggest_int(self, name, low, high, log=False):
        self.asked.append(("int", name, low, high, log))
        return low

    def suggest_categorical(self, name, choices):
        self.asked.append(("choice", name, tuple(choices)))
        return choices[0]


def test_spec_ranges_choices_and_types():
    space = parse_spec("lr=1e-5:3e-4:log, epochs=1:4, batch_size=16|32, precision=bf16|fp32")
    assert space.params == (
        Param("lr", "float", low=1e-5, high=3e-4, log=True),
        Param("epochs", "int", low=1, high=4),
        Param("batch_size", "choice", choices=(16, 32)),
        Param("precision", "choice", choices=("bf16", "fp32")),
    )
    assert space.describe() == "lr=1e-05:0.0003:log,epochs=1:4,batch_size=16|32,precision=bf16|fp32"
    assert parse_spec(space.describe()).params == space.params  # describe round-trips


def test_aliases_and_dashes_name_train_options():
    space = parse_spec("learning-rate=1e-5:1e-4,warmup=0:0.2,layer_decay=0.8|0.9,--batch-size=8")
    assert [p.name for p in space.params] == ["lr", "warmup_ratio", "layer_lr_decay", "batch_size"]


def test_suggest_asks_the_trial_for_each_option():
    space = parse_spec("lr=1e-5:3e-4:log,epochs=1:4,batch_size=16|32")
    trial = FixedTrial()
    assert suggest(space, trial) == {"lr": 1e-5, "epochs": 1, "batch_size": 16}
    assert trial.asked == [
        ("float", "lr", 1e-5, 3e-4, True),
        ("int", "epochs", 1, 4, False),
        ("choice", "batch_size", (16, 32)),
    ]
    # the chosen values make a valid config
    assert (
        dataclasses.replace(TrainConfig(), **suggest(space, FixedTrial())).option_problems() == []
    )


def test_bert_paper_grid_has_eighteen_points():
    space = load_space("bert-paper", TrainConfig())
    assert space.grid() == {
        "batch_size": [16, 32],
        "lr": [5e-5, 3e-5, 2e-5],
        "epochs": [2, 3, 4],
    }
    assert space.grid_size() == 18
    assert parse_spec("lr=1e-5:1e-4,epochs=2|3").grid() is None  # a range is not a grid


def test_default_space_centres_lr_on_the_resolved_default():
    space = default_space(dataclasses.replace(TrainConfig(), lr=1.5e-4))
    lr = next(p for p in space.params if p.name == "lr")
    assert (lr.low, lr.high, lr.log) == (pytest.approx(3e-5), pytest.approx(7.5e-4), True)
    names = {p.name for p in space.params}
    assert names >= {"lr", "epochs", "batch_size", "warmup_ratio", "weight_decay", "dropout"}
    assert "layer_lr_decay" in names and "seed" in names
    bi = default_space(dataclasses.replace(TrainConfig(), lr=2e-5, objective="cosine"))
    assert "layer_lr_decay" not in {p.name for p in bi.params}
    assert load_space(None, dataclasses.replace(TrainConfig(), lr=2e-5)).source == "default"


def test_default_space_leaves_the_options_the_user_set():
    given = TrainConfig(epochs=1, batch_size=16, seed=7, task="sst2")
    fixed = frozenset(changed_fields(given))
    space = load_space(None, dataclasses.replace(given, lr=1.5e-4), fixed)
    names = {p.name for p in space.params}
    assert names == {"lr", "warmup_ratio", "layer_lr_decay", "weight_decay", "dropout"}
    everything = TrainConfig(
        lr=1e-4,
        epochs=1,
        batch_size=16,
        warmup_ratio=0.1,
        layer_lr_decay=0.9,
        weight_decay=0.0,
        dropout=0.1,
        seed=7,
    )
    with pytest.raises(ConfigError, match="default search space is empty: batch_size, dropout"):
        default_space(everything, frozenset(changed_fields(everything)))


def test_yaml_and_json_files(tmp_path):
    yaml_file = tmp_path / "space.yaml"
    yaml_file.write_text(
        "lr: {low: 1.0e-5, high: 3.0e-4, log: true}\nbatch_size: [16, 32]\nepochs: '1:3'\nseed: 7\n"
    )
    space = load_space(str(yaml_file), TrainConfig())
    assert space.describe() == "lr=1e-05:0.0003:log,batch_size=16|32,epochs=1:3,seed=7"
    json_file = tmp_path / "space.json"
    json_file.write_text(json.dumps({"lr": [2e-5, 3e-5], "warmup_ratio": {"low": 0, "high": 0.1}}))
    assert (
        load_space(str(json_file), TrainConfig()).describe() == "lr=2e-05|3e-05,warmup_ratio=0:0.1"
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "is empty"),
        (" , ", "the search space is empty"),
        ("lr", "is not name=low:high"),
        ("lr=3e-4:1e-5", "range is empty: low 0.0003 is not below high 1e-05"),
        ("lr=0:1e-4:log", "a log range needs low > 0"),
        ("lr=1e-5:1e-4:lin", "the third part can only be 'log'"),
        ("epochs=1.5:3", "epochs: '1.5' is not an int"),
        ("lr=fast|slow", "lr: 'fast' is not a float"),
        ("lrr=1e-5:1e-4", "lrr is not a train option; did you mean lr?"),
        ("model=a|b", "model is not searched over"),
        ("lr=1e-5:1e-4,lr=2e-5|3e-5", "lr given twice"),
        ("batch_size=16|16", "lists a choice twice"),
        ("warmup_ratio=0:1.5", "--warmup-ratio must be in [0, 1)"),
        ("precision=bf8|fp32", "precision: 'bf8' is not one of"),
        ("precision=bf16:fp32", "takes a list of choices"),
        ("epochs=0:3", "--epochs must be at least 1, got 0"),
    ],
)
def test_bad_spaces_are_one_line(spec, message):
    with pytest.raises(ConfigError, match=None) as info:
        load_space(spec, TrainConfig())
    text = str(info.value)
    assert message in text and "\n" not in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{}", "the search space is empty"),
        ("[1, 2]", "the search space is empty"),
        ("lr: {low: 1.0e-5}", "lr needs low and high"),
        ("lr: [: bad", "not a valid search space file"),
    ],
)
def test_bad_space_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "space.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_space(str(path), TrainConfig())
    assert str(info.value).startswith(str(path)) and message in str(info.value)


def test_missing_space_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the search space"):
        load_space(str(tmp_path / "nope.yaml"), TrainConfig())
