"""Regression tests: one (or a few) per bug that the restructure fixed. Each failed on the code
before its fix (2928445, the flat package); the docstring of each says how it failed there."""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path

import pytest
import torch

import bertfit
from bertfit.cli.main import main
from tests.conftest import FILLER, MARKER, multi_rows, write_rows

QUICK = ["--batch-size", "8", "--max-length", "32", "--no-progress", "--seed", "1"]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def checkpoint_dirs(run: Path) -> list[Path]:
    """The run's checkpoint folders, oldest first."""
    found = [p for p in run.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name.rsplit("-", 1)[1]))


def trainer_state(checkpoint: Path) -> dict:
    return json.loads((checkpoint / "trainer_state.json").read_text())


# ---- bug 1: tuned multi-label thresholds with --checkpoint -------------------------------------


@pytest.fixture(scope="module")
def multi_run(tiny_bert, tmp_path_factory) -> dict:
    """A multi-label run with tuned thresholds and every epoch's checkpoint kept (4 epochs of
    12 steps: checkpoint-12 ... checkpoint-48)."""
    root = tmp_path_factory.mktemp("multi")
    train = write_rows(root / "train.jsonl", multi_rows(96, 1))
    dev = write_rows(root / "dev.jsonl", multi_rows(24, 2))
    out = root / "run"
    args = ["--train", str(train), "--dev", str(dev), "--model", str(tiny_bert)]
    code = main(
        [
            "train",
            *args,
            "--output",
            str(out),
            "--multi-label",
            "--tune-thresholds",
            "--epochs",
            "4",
            "--lr",
            "5e-3",
            "--warmup-ratio",
            "0",
            "--save-total-limit",
            "10",
            "--keep-checkpoints",
            *QUICK,
        ]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    return {"dir": out, "dev": dev, "root": root, "results": results}


@pytest.mark.slow
def test_checkpoints_load_the_thresholds_tuned_with_them(multi_run):
    """Before: the trainer state kept the thresholds under ``kept`` and ``load(checkpoint=...)``
    read ``thresholds``, found none and decided every label at 0.5."""
    out, results = multi_run["dir"], multi_run["results"]
    labels, tuned = results["labels"], results["thresholds"]
    assert any(tuned[x] != 0.5 for x in labels), "tuning kept 0.5 everywhere: this proves nothing"
    # the best checkpoint holds the run's final best model, with the thresholds of results.json
    best = bertfit.load(out, device="cpu", checkpoint="best")
    assert best.results["checkpoint_step"] == results["best_step"]
    assert best.thresholds.tolist() == pytest.approx([tuned[x] for x in labels])
    assert bertfit.load(out, device="cpu").thresholds.tolist() == best.thresholds.tolist()
    # every checkpoint: the thresholds its trainer_state.json records
    checkpoints = checkpoint_dirs(out)
    assert len(checkpoints) == 4, [p.name for p in checkpoints]
    states = {p.name: trainer_state(p) for p in checkpoints}
    assert all(s.get("last_thresholds") is not None for s in states.values()), states
    best_dir = out / f"checkpoint-{results['best_step']}"
    assert dict(zip(labels, states[best_dir.name]["thresholds"])) == pytest.approx(tuned)
    cases = [
        ("best", best_dir),
        ("last", checkpoints[-1]),
        (checkpoints[0].name.rsplit("-", 1)[1], checkpoints[0]),  # a step number
        (checkpoints[1].name, checkpoints[1]),  # a folder name
    ]
    for which, folder in cases:
        run = bertfit.load(out, device="cpu", checkpoint=which)
        # the thresholds tuned with that checkpoint's own weights (its latest evaluation)
        own = states[folder.name]["last_thresholds"]
        assert run.thresholds.tolist() == pytest.approx(own), which


def test_predict_with_the_best_checkpoint_uses_its_thresholds(multi_run, tmp_path):
    """Before: ``predict --checkpoint best`` decided at 0.5, unlike the finished run, whose model
    is the same."""
    out, dev = multi_run["dir"], multi_run["dev"]
    finished, best = tmp_path / "finished.jsonl", tmp_path / "best.jsonl"
    assert main(["predict", str(out), "--input", str(dev), "--output", str(finished)]) == 0
    assert (
        main(
            [
                "predict",
                str(out),
                "--checkpoint",
                "best",
                "--input",
                str(dev),
                "--output",
                str(best),
            ]
        )
        == 0
    )
    records = read_jsonl(best)
    assert records == read_jsonl(finished)
    cut = multi_run["results"]["thresholds"]
    chosen = [r["labels"] for r in records]
    assert chosen == [[x for x, p in r["probabilities"].items() if p >= cut[x]] for r in records]
    # on the dev set they were tuned on, tuned thresholds decide differently from 0.5
    at_half = [[x for x, p in r["probabilities"].items() if p >= 0.5] for r in records]
    assert at_half != chosen


# ---- bug 2: compare on multi-label runs ---------------------------------------------------------


@pytest.mark.slow
def test_compare_multi_label_runs_scores_each_with_its_own_thresholds(multi_run, tmp_path, capsys):
    """Before: ``compare`` read multi-label targets as single labels and stopped with an internal
    error (exit 1); it also scored every run at 0.5."""
    a, dev = multi_run["dir"], multi_run["dev"]
    b = tmp_path / "b"
    shutil.copytree(a, b, ignore=shutil.ignore_patterns("checkpoint-*"))

    def compare() -> dict:
        capsys.readouterr()
        page = str(tmp_path / "compare.html")
        code = main(["compare", str(a), str(b), "--data", str(dev), "--output", page, "--json"])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        (paired,) = json.loads(captured.out)["paired"]
        return paired

    paired = compare()
    assert paired["metric"] == "micro_f1" and paired["n"] == 24
    assert paired["b"] == str(a) and paired["a"] == str(b)
    assert paired["difference"] == pytest.approx(0.0, abs=1e-12)  # the same model, thresholds

    # b now decides at 0.999: it predicts (almost) no label, and only b's scores change
    results = json.loads((b / "results.json").read_text())
    results["thresholds"] = {label: 0.999 for label in results["labels"]}
    (b / "results.json").write_text(json.dumps(results))
    f1 = {
        run: bertfit.evaluate(bertfit.EvaluateConfig(run_dir=str(run), data=str(dev)))["micro_f1"]
        for run in (a, b)
    }
    assert f1[a] > 0.5 and f1[b] < f1[a] - 0.3
    paired = compare()
    assert paired["difference"] == pytest.approx(f1[b] - f1[a])


# ---- bug 3: a bi-encoder packs at the --max-length asked for ------------------------------------


def score_pairs(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a = rng.choices(FILLER, k=rng.randint(3, 6))
        b = rng.choices(FILLER, k=rng.randint(3, 6))
        similar = i % 2 == 0
        if similar:
            a.append(MARKER)
            b.append(MARKER)
        rows.append({"a": " ".join(a), "b": " ".join(b), "score": 4.0 if similar else 1.0})
    return rows


@pytest.fixture(scope="module")
def long_bert(tiny_bert, tmp_path_factory) -> Path:
    """tiny_bert with 512 positions (tiny_bert has 64): room for a --max-length above 128."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("long-bert")
    for item in tiny_bert.iterdir():
        if item.name not in ("config.json", "model.safetensors"):
            shutil.copy(item, folder / item.name)
    config = BertConfig.from_pretrained(tiny_bert)
    config.max_position_embeddings = 512
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder


def train_bi_encoder(model: Path, root: Path, max_length: int) -> Path:
    train = write_rows(root / "pairs.jsonl", score_pairs(24, 1))
    out = root / "run"
    code = main(
        [
            "train",
            "--train",
            str(train),
            "--text-column",
            "a",
            "--pair-column",
            "b",
            "--label-column",
            "score",
            "--objective",
            "cosine",
            "--model",
            str(model),
            "--output",
            str(out),
            "--max-length",
            str(max_length),
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--dev-fraction",
            "0.25",
            "--no-progress",
            "--seed",
            "1",
        ]
    )
    assert code == 0
    return out


def assert_packs_at(out: Path, max_length: int) -> None:
    meta = json.loads((out / "bertfit.json").read_text())
    assert meta["config"]["max_length"] == max_length
    assert meta["pooling"]["max_length"] == max_length
    st_config = json.loads((out / "sentence_bert_config.json").read_text())
    assert st_config["max_seq_length"] == max_length
    embedder = bertfit.load_embedder(str(out), device="cpu")
    assert embedder.pooling.max_length == max_length
    long_text = " ".join(random.Random(0).choices(FILLER, k=400))
    assert embedder.pack([long_text]).lengths[0] == max_length


def test_bi_encoder_packs_at_max_length_above_128(long_bert, tmp_path):
    """Before: a model folder without sentence-transformers files declared 128 tokens, and the
    bi-encoder took min(--max-length, 128): --max-length 256 packed, and saved, 128."""
    assert_packs_at(train_bi_encoder(long_bert, tmp_path, 256), 256)


def test_bi_encoder_packs_at_max_length_48(tiny_bert, tmp_path):
    assert_packs_at(train_bi_encoder(tiny_bert, tmp_path, 48), 48)


# ---- bug 4: problems that depend on the task or the problem come before any heavy work --------


@pytest.fixture
def nothing_heavy(monkeypatch, offline_env) -> None:
    """Loading the encoder, its tokenizer or the data fails the test; no download can happen."""
    import bertfit.models.classifier
    import bertfit.training.run

    def refuse(*args, **kwargs):
        raise AssertionError("loaded")

    monkeypatch.setattr(bertfit.models.classifier, "load_tokenizer", refuse)
    monkeypatch.setattr(bertfit.training.run, "load_tokenizer", refuse)
    for name in ("resolve_encoder", "read_training_data"):  # if the engine still calls them so
        monkeypatch.setattr(bertfit.training.run, name, refuse, raising=False)


@pytest.mark.parametrize(
    "extra,messages",
    [
        (["--metric", "pearson"], ["--metric pearson", "accuracy"]),
        (
            ["--metric", "pearson", "--epochs", "0"],
            ["--metric pearson", "--epochs must be at least 1"],
        ),
        (["--task", "sst2", "--metric", "spearman"], ["--metric spearman", "accuracy"]),
        (["--task", "sst2", "--train-split", "nope"], ["--train-split", "'nope'", "sst2"]),
    ],
)
def test_config_problems_are_reported_before_loading_anything(
    nothing_heavy, tiny_bert, tmp_path, capsys, extra, messages
):
    """Before: --metric was checked against the problem only after the tokenizer and the data
    were loaded (a missing --train file was reported instead), and an unknown --train-split
    only when the corpus was read."""
    missing = tmp_path / "missing.csv"
    train = [] if "--task" in extra else ["--train", str(missing)]
    out = tmp_path / "out"
    args = ["train", *train, "--model", str(tiny_bert), "--output", str(out), "--no-progress"]
    capsys.readouterr()
    assert main([*args, *extra]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    for message in messages:
        assert message in err, (message, err)
    assert "loaded" not in err and "missing.csv" not in err
    if "--train-split" in extra:
        from bertfit.data.tasks import get_task

        assert all(split in err for split in get_task("sst2").splits), err
    assert not out.exists()


# ---- bug 6 (part): bertfit.train leaves the "bertfit" logger as it found it ----------------------


def tiny_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = rng.choices(FILLER, k=rng.randint(3, 8))
        if i % 2 == 0:
            words.insert(rng.randrange(len(words) + 1), MARKER)
        rows.append({"text": " ".join(words), "label": "pos" if i % 2 == 0 else "neg"})
    return rows


def quick_train(tiny_bert, output: Path):
    config = bertfit.TrainConfig(
        output=str(output),
        model=str(tiny_bert),
        epochs=1,
        batch_size=8,
        max_length=32,
        progress=False,
        seed=1,
    )
    return bertfit.train(config, train=tiny_rows(24, 1), dev=tiny_rows(8, 2))


def logger_state(logger: logging.Logger) -> tuple:
    return list(logger.handlers), logger.level, logger.propagate


@pytest.fixture
def bare_bertfit_logger():
    """The "bertfit" logger as an application that configured nothing has it."""
    log = logging.getLogger("bertfit")
    saved = logger_state(log)
    log.handlers = []
    log.setLevel(logging.NOTSET)
    log.propagate = True
    yield log
    log.handlers = saved[0]
    log.setLevel(saved[1])
    log.propagate = saved[2]


def test_train_without_any_logging_leaves_the_logger_as_it_was(
    bare_bertfit_logger, tiny_bert, tmp_path, capsys
):
    """Before: the first ``bertfit.train`` added a stderr handler to the "bertfit" logger, set it
    to INFO and turned propagation off, for good."""
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = []  # pytest's own capture handlers: an application with no logging set up
    try:
        quick_train(tiny_bert, tmp_path / "run")
        after = logger_state(bare_bertfit_logger)
        root_after = root.handlers[:]
    finally:
        root.handlers = saved
    assert after == ([], logging.NOTSET, True)
    assert root_after == []
    assert "done: best dev accuracy" in capsys.readouterr().err  # progress lines while it ran


def test_train_with_logging_configured_uses_it_and_changes_nothing(
    bare_bertfit_logger, tiny_bert, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="bertfit")
    before = logger_state(bare_bertfit_logger)
    assert logging.getLogger().handlers  # pytest's capture handlers stand for the application's
    quick_train(tiny_bert, tmp_path / "run")
    assert logger_state(bare_bertfit_logger) == before
    assert any(
        r.name == "bertfit" and r.getMessage().startswith("done: best dev") for r in caplog.records
    )


# ---- bug 8: out-of-memory is recognised by its type or the allocator's own words ---------------


def test_out_of_memory_is_recognised_by_type_or_allocator_message():
    """Before: any RuntimeError whose text held "out of memory" counted as one, and got the
    --batch-size advice instead of its own traceback."""
    from bertfit.training.advice import is_out_of_memory

    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert is_out_of_memory(torch.OutOfMemoryError("anything"))
    assert is_out_of_memory(
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
            "memory: you tried to allocate 123 bytes. Error code 12 (Cannot allocate memory)"
        )
    )
    assert not is_out_of_memory(RuntimeError("index out of memory range in my_op"))
    assert not is_out_of_memory(RuntimeError("my_op: read out of memory bounds"))
    assert not is_out_of_memory(ValueError("DefaultCPUAllocator: can't allocate memory"))


# ---- bug 7: a task split trained on is never reported as the test split --------------------------


def write_qnli_export(base: Path, validation: int = 20) -> Path:
    """D/QNLI/hf_parquet/{validation,test}/0000.parquet as Hugging Face exports GLUE QNLI:
    columns question, sentence, label, idx; the test labels are -1."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    folder = base / "QNLI"
    features = {"label": {"names": ["entailment", "not_entailment"], "_type": "ClassLabel"}}
    meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    rng = random.Random(0)
    for split, n in (("validation", validation), ("test", 4)):
        question = [" ".join(rng.choices(FILLER, k=4)) for _ in range(n)]
        sentence = [" ".join(rng.choices(FILLER, k=6)) for _ in range(n)]
        label = [i % 2 for i in range(n)] if split == "validation" else [-1] * n
        table = pa.table(
            {
                "question": question,
                "sentence": sentence,
                "label": pa.array(label, pa.int64()),
                "idx": pa.array(range(n), pa.int32()),
            }
        )
        (folder / "hf_parquet" / split).mkdir(parents=True)
        pq.write_table(
            table.replace_schema_metadata(meta), folder / "hf_parquet" / split / "0000.parquet"
        )
    return folder


def test_training_on_the_validation_split_does_not_report_it_as_test(
    tiny_bert, tmp_path, offline_env
):
    """Before: with --dev-fraction the task's dev split became the test split unless its name
    was literally the --train-split; "validation" (HF's name for "dev") was not, so the split
    trained on was scored again and reported as test_split "dev"."""
    write_qnli_export(tmp_path / "data")
    out = tmp_path / "run"
    args = [
        "train",
        "--task",
        "qnli",
        "--data-dir",
        str(tmp_path / "data"),
        "--model",
        str(tiny_bert),
    ]
    extra = ["--train-split", "validation", "--dev-fraction", "0.1", "--epochs", "1"]
    assert main([*args, "--output", str(out), *extra, *QUICK]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["train_examples"] == 18 and results["dev_examples"] == 2
    assert results.get("test_split") not in ("dev", "validation"), results.get("test_split")
    assert "test" not in results or results["test"]["n"] != 20
