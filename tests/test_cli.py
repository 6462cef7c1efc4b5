"""End-to-end: the real CLI on the tiny model and generated data, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from bertfit.cli.main import COMMANDS, build_parser, main
from tests.conftest import marker_rows, write_rows

FAST = [
    "--epochs",
    "4",
    "--batch-size",
    "16",
    "--lr",
    "3e-3",
    "--warmup-ratio",
    "0.0",
    "--no-progress",
    "--seed",
    "1",
]


@pytest.fixture(scope="module")
def single_run(tiny_bert, tmp_path_factory):
    """One trained single-text run shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("single")
    train = write_rows(root / "train.csv", marker_rows(400, seed=1))
    dev = write_rows(root / "dev.jsonl", marker_rows(100, seed=2))
    out = root / "run"
    code = main(
        [
            "train",
            "--train",
            str(train),
            "--dev",
            str(dev),
            "--model",
            str(tiny_bert),
            "--output",
            str(out),
            *FAST,
        ]
    )
    assert code == 0
    return {"dir": out, "dev": dev, "root": root}


@pytest.mark.slow
def test_train_learns_and_writes_a_complete_run(single_run):
    out = single_run["dir"]
    for name in (
        "model.safetensors",
        "config.json",
        "bertfit.json",
        "metrics.jsonl",
        "results.json",
        "tokenizer.json",
    ):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    assert results["dev"]["accuracy"] > 0.85  # chance is 0.5
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4 and all("accuracy" in json.loads(x)["dev"] for x in lines)
    best = max(json.loads(x)["dev"]["accuracy"] for x in lines)
    assert results["dev"]["accuracy"] == pytest.approx(best)
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"}


def test_evaluate_json_matches_training_dev_metrics(single_run, capsys):
    capsys.readouterr()
    assert (
        main(["evaluate", str(single_run["dir"]), "--data", str(single_run["dev"]), "--json"]) == 0
    )
    metrics = json.loads(capsys.readouterr().out)
    results = json.loads((single_run["dir"] / "results.json").read_text())
    assert metrics["n"] == 100
    assert metrics["accuracy"] == pytest.approx(results["dev"]["accuracy"])
    assert {"accuracy", "macro_f1", "mcc", "f1"} <= set(metrics)
    assert set(metrics["per_class"]) == {"neg", "pos"}
    assert sum(map(sum, metrics["confusion_matrix"])) == 100
    # 95% bootstrap intervals beside the unchanged point figures, the same on every run (seeded)
    assert set(metrics["ci"]) == {"accuracy", "macro_f1", "mcc", "f1"}
    for name, (low, high) in metrics["ci"].items():
        assert low <= metrics[name] <= high, name
    low, high = metrics["ci"]["accuracy"]
    assert 0 <= high - low < 0.3  # zero width only when every resample scores the same
    capsys.readouterr()
    main(["evaluate", str(single_run["dir"]), "--data", str(single_run["dev"]), "--json"])
    assert json.loads(capsys.readouterr().out)["ci"] == metrics["ci"]


def test_evaluate_table(single_run, capsys):
    assert main(["evaluate", str(single_run["dir"]), "--data", str(single_run["dev"])]) == 0
    out = capsys.readouterr().out
    assert "accuracy:" in out and "confusion matrix" in out and "precision" in out


def test_predict_text_and_files(single_run, capsys, tmp_path):
    run = str(single_run["dir"])
    capsys.readouterr()
    assert main(["predict", run, "--text", "the movie was great and the music too"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("label: pos") and "probabilities:" in out
    inputs = write_rows(
        tmp_path / "in.csv",
        [{"text": "great film"}, {"text": "awful plot"}, {"text": "one great song"}],
    )
    for ext in ("jsonl", "csv", "tsv"):
        target = tmp_path / f"preds.{ext}"
        assert main(["predict", run, "--input", str(inputs), "--output", str(target)]) == 0
        assert len(target.read_text().strip().splitlines()) == (3 if ext == "jsonl" else 4)
    records = [json.loads(x) for x in (tmp_path / "preds.jsonl").read_text().splitlines()]
    assert [r["label"] for r in records] == ["pos", "neg", "pos"]
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-4 for r in records)


def test_transformers_reloads_run_with_same_logits(single_run):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import bertfit

    run = bertfit.load(single_run["dir"], device="cpu")
    texts = ["great scene and great cast", "a long story"]
    ours = run.logits(texts)
    model = AutoModelForSequenceClassification.from_pretrained(single_run["dir"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(single_run["dir"])
    with torch.no_grad():
        theirs = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.numpy()
    assert abs(ours - theirs).max() < 0.05  # ours runs in bf16 on bf16 CPUs
    assert (ours.argmax(-1) == theirs.argmax(-1)).all()


@pytest.mark.slow
def test_python_api_train_and_predict(tiny_bert, tmp_path, cache_env):
    import bertfit

    train = write_rows(tmp_path / "train.jsonl", marker_rows(200, seed=5))
    run = bertfit.train(
        bertfit.TrainConfig(
            train=str(train),
            output=str(tmp_path / "run"),
            model=str(tiny_bert),
            epochs=2,
            batch_size=16,
            lr=3e-3,
            progress=False,
        )
    )
    assert run.results["dev_examples"] == 20  # 10% stratified dev split
    preds = bertfit.load(tmp_path / "run").predict(["great great film", "an old song"])
    assert len(preds) == 2 and set(preds[0]["probabilities"]) == {"neg", "pos"}


@pytest.mark.slow
def test_pair_task_end_to_end(tiny_bert, tmp_path, cache_env, capsys):
    train = write_rows(tmp_path / "pairs.tsv.gz", marker_rows(400, seed=3, pair=True))
    out = tmp_path / "nli"
    assert (
        main(
            [
                "train",
                "--train",
                str(train),
                "--text-column",
                "premise",
                "--pair-column",
                "hypothesis",
                "--model",
                str(tiny_bert),
                "--output",
                str(out),
                "--dev-fraction",
                "0.2",
                *FAST,
            ]
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert results["dev"]["accuracy"] > 0.8
    capsys.readouterr()
    assert main(["predict", str(out), "--text", "a film", "--pair", "it was great"]) == 0
    assert capsys.readouterr().out.startswith("label: yes")
    assert main(["predict", str(out), "--text", "a film"]) == 2
    assert "--pair" in capsys.readouterr().err


@pytest.mark.slow
def test_d2l_checkpoint_trains_through_the_same_pipeline(tmp_path, cache_env):
    from bertfit.models.d2l import D2LBertForSequenceClassification, D2LConfig
    from tests.conftest import WORDS

    vocab = ["<unk>", "<pad>", "<mask>", "<cls>", "<sep>", *WORDS]
    config = D2LConfig(
        vocab_size=len(vocab),
        num_hiddens=32,
        ffn_num_hiddens=64,
        num_heads=2,
        num_layers=2,
        max_len=64,
        dropout=0.0,
    )
    book = D2LBertForSequenceClassification(config, 2)
    state = {k: v for k, v in book.state_dict().items() if not k.startswith("output.")}
    ckpt = tmp_path / "bert.tiny.torch"
    ckpt.mkdir()
    torch.save(state, ckpt / "pretrained.params")
    (ckpt / "vocab.json").write_text(json.dumps(vocab))
    train = write_rows(tmp_path / "train.csv", marker_rows(300, seed=4))
    out = tmp_path / "run"
    assert (
        main(["train", "--train", str(train), "--model", str(ckpt), "--output", str(out), *FAST])
        == 0
    )
    import bertfit

    run = bertfit.load(out)
    assert run.meta.encoder_kind == "d2l"
    assert run.results["dev"]["accuracy"] > 0.8
    assert run.predict(["great film"])[0]["label"] == "pos"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bertfit", *args], capture_output=True, text=True)


@pytest.mark.slow
def test_errors_are_one_line_with_exit_code_2(tiny_bert, tmp_path, cache_env):
    good = write_rows(tmp_path / "good.csv", marker_rows(40, seed=1))
    (tmp_path / "badjson.jsonl").write_text('{"text": "a", "label": 1}\n{"text": \n')
    (tmp_path / "latin1.csv").write_bytes(b"text,label\ncaf\xe9,1\n")
    (tmp_path / "empty.csv").write_text("")
    cases = [
        (["--train", str(tmp_path / "nope.csv")], "nope.csv: no such file"),
        (
            ["--train", str(good), "--text-column", "sentence"],
            "no column 'sentence' for --text-column; the file has columns: 0='text', 1='label'",
        ),
        (["--train", str(tmp_path / "badjson.jsonl")], "badjson.jsonl:2: invalid JSON"),
        (["--train", str(tmp_path / "latin1.csv")], "latin1.csv:2: bytes that are not UTF-8"),
        (["--train", str(tmp_path / "empty.csv")], "empty.csv: empty file"),
        (["--train", str(good), "--model", str(tmp_path / "no-model")], "no such file or folder"),
        (
            ["--train", str(good), "--epochs", "0", "--batch-size", "0"],
            "--batch-size must be at least 1, got 0; --epochs must be at least 1",
        ),
    ]
    for extra, message in cases:
        out = tmp_path / "out"
        result = run_cli(
            "train", "--output", str(out), "--model", str(tiny_bert), "--no-progress", *extra
        )
        assert result.returncode == 2, (extra, result.stderr)
        assert message in result.stderr, (message, result.stderr)
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert not out.exists()
    debug = run_cli(
        "--debug", "train", "--output", str(tmp_path / "o"), "--train", str(tmp_path / "nope.csv")
    )
    assert "Traceback" in debug.stderr


@pytest.mark.slow
def test_unknown_hub_model_offline_says_how_to_supply_a_folder(tmp_path):
    good = write_rows(tmp_path / "good.csv", marker_rows(20, seed=1))
    result = run_cli(
        "train",
        "--train",
        str(good),
        "--output",
        str(tmp_path / "o"),
        "--model",
        "some-org/some-bert",
    )
    assert result.returncode == 2
    assert (
        "cannot get it from the Hugging Face Hub" in result.stderr
        and "--model DIR" in result.stderr
    )


@pytest.mark.slow
def test_existing_output_needs_overwrite_and_unfinished_run_is_refused(
    single_run, tmp_path, tiny_bert
):
    good = write_rows(tmp_path / "good.csv", marker_rows(20, seed=1))
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = run_cli("train", "--train", str(good), "--output", str(out), "--model", str(tiny_bert))
    assert result.returncode == 2 and "pass --overwrite" in result.stderr
    assert (out / "keep.txt").read_text() == "mine"
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "bertfit.json").write_text((single_run["dir"] / "bertfit.json").read_text())
    result = run_cli("predict", str(unfinished), "--text", "x")
    assert result.returncode == 2 and "did not finish" in result.stderr


def test_unseen_dev_label_is_an_error(tiny_bert, tmp_path, cache_env, capsys):
    train = write_rows(tmp_path / "train.csv", marker_rows(40, seed=1))
    dev = write_rows(tmp_path / "dev.csv", [{"text": "a film", "label": "maybe"}])
    assert (
        main(
            [
                "train",
                "--train",
                str(train),
                "--dev",
                str(dev),
                "--model",
                str(tiny_bert),
                "--output",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "label 'maybe' does not occur in the training data" in capsys.readouterr().err


def test_command_table_and_help_stay_in_sync():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)
    for name, (cls, _) in COMMANDS.items():
        help_text = sub.choices[name].format_help()
        for field in cls.__dataclass_fields__.values():
            flag = (
                field.name
                if field.metadata.get("positional")
                else "--" + field.name.replace("_", "-")
            )
            assert flag in help_text, (name, flag)
    train_help = " ".join(sub.choices["train"].format_help().split())
    assert "passes over the training data (default: 3)" in train_help
    assert "16 for text-pair classifiers, else 32]" in train_help  # --batch-size


def test_layer_lr_decay_groups(tiny_bert):
    from bertfit.models.classifier import build_classifier
    from bertfit.models.encoders import resolve_encoder
    from bertfit.training.optim import make_optimizer

    model = build_classifier(resolve_encoder(str(tiny_bert)), ["a", "b"])
    optimizer = make_optimizer(model, 1e-3, 0.01, torch.device("cpu"), layer_decay=0.5)
    rates = sorted({group["lr"] for group in optimizer.param_groups})
    assert rates == pytest.approx(
        [1e-3 * 0.5**3, 1e-3 * 0.5**2, 1e-3 * 0.5, 1e-3]
    )  # emb, 2 blocks, head
    no_decay = [g for g in optimizer.param_groups if g["weight_decay"] == 0]
    assert all(p.ndim < 2 for g in no_decay for p in g["params"])


@pytest.mark.slow
def test_quickstart_runs_on_the_bundled_sample(tmp_path, cache_env, capsys):
    assert (
        main(
            ["quickstart", "--output", str(tmp_path / "qs"), "--train-limit", "64", "--no-progress"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "accuracy:" in out and "a gorgeous, witty, seductive movie." in out
    assert (tmp_path / "qs" / "results.json").is_file()


def test_run_has_a_hugging_face_model_card(single_run):
    from huggingface_hub import ModelCard

    results = json.loads((single_run["dir"] / "results.json").read_text())
    card = ModelCard.load(single_run["dir"] / "README.md")
    data = card.data.to_dict()
    assert data["pipeline_tag"] == "text-classification" and data["license"] == "other"
    assert data["base_model"] and "accuracy" in data["metrics"]
    (result,) = [r for r in card.data.eval_results if r.metric_type == "accuracy"]
    assert result.metric_value == pytest.approx(results["dev"]["accuracy"], abs=1e-4)
    low, high = results["dev_ci"]["accuracy"]
    assert low <= results["dev"]["accuracy"] <= high
    text = card.text
    for section in (
        "## Intended use",
        "## Training data",
        "## Hyper-parameters",
        "## Results",
        "## Limitations",
    ):
        assert section in text
    assert (
        f"| dev | accuracy | {results['dev']['accuracy']:.4f} | {low:.4f} to {high:.4f} |" in text
    )
