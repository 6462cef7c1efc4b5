"""``bertfit export RUN --format onnx`` and ``--backend onnx``: the graph agrees with PyTorch for
every kind of run, its axes are dynamic, int8 mostly agrees, and the commands give the same
records; refusals are one line."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bertfit.cli.main import main
from tests.conftest import marker_rows, multi_rows, write_rows
from tests.test_biencoder import pair_rows, pair_training
from tests.test_problems import score_rows

QUICK = ["--epochs", "1", "--batch-size", "16", "--lr", "3e-3", "--warmup-ratio", "0"]
QUICK += ["--max-length", "32", "--threads", "1", "--no-progress", "--seed", "1"]
TEXTS = ["a great film", "the plot was long and the ending awful but the music was great", "one"]
TEXTS += ["it is a story of an old actor", " ".join(["a very long scene"] * 20)]
PAIRS = TEXTS[2:] + TEXTS[:2]
DIFF_LINE = r"largest \|onnx - torch\| (logit|vector) difference: (\S+) \(limit 1e-3\)"
CLASSIFIERS = ["classifier", "pair", "regression", "multi_label"]


def _train_args(kind: str, root: Path, model: Path) -> list[str]:
    """The training command of a tiny run of ``kind`` (its data written under ``root``)."""
    out = ["--output", str(root / kind), "--model", str(model)]
    if kind == "bi_encoder":
        train = write_rows(root / "pairs.csv", pair_rows(40, 1, "cosine"))
        return [*pair_training(train, model, root / kind, "cosine"), "--normalize"]
    if kind == "pair":
        train = write_rows(root / "pair.csv", marker_rows(32, 1, pair=True))
        columns = ["--text-column", "premise", "--pair-column", "hypothesis"]
        return ["train", "--train", str(train), *columns, *out]
    rows, flag = {
        "classifier": (marker_rows(32, 1), []),
        "regression": (score_rows(32, 1), ["--regression"]),
        "multi_label": (multi_rows(32, 1), ["--multi-label"]),
    }[kind]
    train = write_rows(root / f"{kind}.jsonl", rows)
    return ["train", "--train", str(train), *out, *flag]


@pytest.fixture(scope="module")
def runs(tiny_bert, tmp_path_factory):
    """``runs(kind)``: a tiny finished run of that kind, trained on first use, shared after."""
    root = tmp_path_factory.mktemp("onnx-runs")
    made: dict[str, Path] = {}

    def make(kind: str) -> Path:
        if kind not in made:
            assert main([*_train_args(kind, root, tiny_bert), *QUICK]) == 0
            made[kind] = root / kind
        return made[kind]

    return make


@pytest.fixture(scope="module")
def exported(runs):
    """``exported(kind, capsys)``: a run of that kind with its fp32 export in RUN/onnx, and the
    export's stderr lines (the output captured before and by it is consumed)."""
    done: dict[str, tuple[Path, list[str]]] = {}

    def make(kind: str, capsys) -> tuple[Path, list[str]]:
        if kind not in done:
            run = runs(kind)
            capsys.readouterr()
            assert main(["export", str(run), "--format", "onnx"]) == 0
            done[kind] = (run, capsys.readouterr().err.splitlines())
        return done[kind]

    return make


def copy_run(run: Path, where: Path, with_export: bool = False) -> Path:
    ignore = None if with_export else shutil.ignore_patterns("onnx")
    shutil.copytree(run, where, ignore=ignore)
    return where


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def fp32_logits(run_dir: Path, texts: list[str], pairs: list[str] | None) -> np.ndarray:
    import bertfit
    from bertfit.inference.run import compute_logits

    run = bertfit.load(run_dir, device="cpu")
    packed = run.pack(texts, pairs)
    return compute_logits(run.model, packed, run.tokenizer.pad_token_id, dtype=None)


@pytest.fixture
def fp32_torch(monkeypatch):
    """PyTorch inference in fp32 (not bf16 where the CPU has it): the reference for ONNX."""
    monkeypatch.setattr("bertfit.inference.run.pick_precision", lambda *_: None)


@pytest.mark.slow
@pytest.mark.parametrize("kind", CLASSIFIERS)
def test_export_gives_the_pytorch_logits(exported, kind, capsys):
    import bertfit
    from bertfit.models.encoders import sha256_file

    run, lines = exported(kind, capsys)
    folder = run / "onnx"
    assert lines[0] == f"wrote {folder}: model.onnx, config.json, tokenizer.json, " + (
        "tokenizer_config.json, export.json"
    )
    found = re.fullmatch(DIFF_LINE, lines[1])
    assert found and found[1] == "logit" and float(found[2]) < 1e-3, lines
    assert listing(folder) == sorted(json.loads((folder / "export.json").read_text())["files"])
    record = json.loads((folder / "export.json").read_text())
    assert record["opset"] >= 17 and record["max_abs_diff"] == pytest.approx(float(found[2]), 0.1)
    assert record["weights"]["sha256"] == sha256_file(run / "model.safetensors")
    assert json.loads((folder / "config.json").read_text())["id2label"]
    pairs = PAIRS if kind == "pair" else None
    onnx_run = bertfit.load(run, device="cpu", backend="onnx")
    assert onnx_run.backend == "onnx" and onnx_run.forward.path == folder / "model.onnx"
    expected = fp32_logits(run, TEXTS, pairs)
    for p in onnx_run.model.parameters():  # the logits must come from the graph, not from here
        p.data.zero_()
    got = onnx_run.logits(TEXTS, pairs, batch_size=2)
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-3


@pytest.mark.slow
def test_bi_encoder_export_embeds_as_pytorch(exported, tmp_path, capsys):
    import bertfit
    from bertfit.inference.embed import load_embedder

    run, lines = exported("bi_encoder", capsys)
    found = re.fullmatch(DIFF_LINE, lines[1])
    assert found and found[1] == "vector" and float(found[2]) < 1e-3, lines
    record = json.loads((run / "onnx" / "export.json").read_text())
    assert record["outputs"] == ["pooled", "sentence_embedding"] and record["kind"] == "embedding"
    torch_embedder = load_embedder(str(run), device="cpu", precision="fp32")
    onnx_embedder = load_embedder(str(run), device="cpu", backend="onnx")
    assert onnx_embedder.pooling.normalize  # trained with --normalize
    for normalize in (None, False, True):
        want = torch_embedder.encode(TEXTS, normalize=normalize)
        got = onnx_embedder.encode(TEXTS, batch_size=2, normalize=normalize)
        assert np.abs(got - want).max() < 1e-3, normalize
    assert np.allclose(np.linalg.norm(onnx_embedder.encode(TEXTS), axis=1), 1, atol=1e-5)
    assert not np.allclose(np.linalg.norm(onnx_embedder.encode(TEXTS, normalize=False), axis=1), 1)
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "v.npy"
    argv = ["embed", str(run), "--input", str(texts), "--output", str(out), "--backend", "onnx"]
    assert main(argv) == 0
    assert np.abs(np.load(out) - torch_embedder.encode(TEXTS)).max() < 1e-3
    argv = ["similarity", str(run), "--text", TEXTS[0], "--pair", TEXTS[1]]
    assert main([*argv, "--backend", "onnx"]) == 0
    want = float(torch_embedder.similarity(TEXTS[:1], TEXTS[1:2])[0])
    assert f"cosine similarity: {want:.4f}" in capsys.readouterr().out
    assert bertfit.load(run, device="cpu", backend="onnx").backend == "onnx"


@pytest.mark.slow
def test_bi_encoder_evaluate_and_search_take_the_onnx_backend(
    exported, tmp_path, capsys, monkeypatch
):
    run, _ = exported("bi_encoder", capsys)
    monkeypatch.setattr("bertfit.inference.embed.pick_precision", lambda *_: None)  # fp32 torch
    data = write_rows(tmp_path / "sts.csv", pair_rows(20, 3, "cosine"))
    argv = ["evaluate", str(run), "--data", str(data), "--text-column", "a", "--pair-column", "b"]
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    torch_metrics = json.loads(capsys.readouterr().out)
    assert main([*argv, "--json", "--backend", "onnx"]) == 0
    onnx_metrics = json.loads(capsys.readouterr().out)
    assert onnx_metrics["spearman"] == pytest.approx(torch_metrics["spearman"], abs=1e-3)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS) + "\n")
    argv = ["search", str(run), "--corpus", str(corpus), "--query", TEXTS[3], "--backend", "onnx"]
    assert main([*argv, "--top-k", "1"]) == 0
    assert TEXTS[3] in capsys.readouterr().out  # a text is nearest itself
    argv = ["export", str(run), "--format", "onnx", "--quantize", "int8", "--data", str(data)]
    assert main([*argv, "--output", str(tmp_path / "o")]) == 2
    assert "--data: scoring before and after quantising is for classifier runs" in (
        capsys.readouterr().err
    )


@pytest.mark.slow
def test_one_session_takes_any_batch_size_and_length(exported, capsys):
    from bertfit.data.packing import collate
    from bertfit.inference.onnx import open_session

    run, _ = exported("classifier", capsys)
    model = open_session(run / "onnx" / "model.onnx")
    for item in model.session.get_inputs():
        assert item.shape == ["batch", "sequence"] and item.type == "tensor(int64)", item
    import bertfit

    torch_run = bertfit.load(run, device="cpu")
    packed = torch_run.pack(TEXTS)
    shapes = set()
    for indices in (np.array([0, 2]), np.array([4, 1, 3, 0, 2]), np.array([2])):
        batch = collate(packed, indices, torch_run.tokenizer.pad_token_id)
        got = model.run(batch, "logits")
        with torch.inference_mode():
            want = torch_run.model(**batch).logits.numpy()
        assert got.shape == want.shape and np.abs(got - want).max() < 1e-3
        shapes.add(tuple(batch["input_ids"].shape))
    assert len({b for b, _ in shapes}) == 3 and len({n for _, n in shapes}) == 3  # both axes vary


@pytest.mark.slow
def test_int8_model_mostly_agrees_and_reports_the_metric_before_and_after(runs, tmp_path, capsys):
    import bertfit
    from bertfit.inference.run import load

    run = copy_run(runs("classifier"), tmp_path / "run")
    dev = write_rows(tmp_path / "dev.csv", marker_rows(24, seed=5))
    capsys.readouterr()
    argv = ["export", str(run), "--format", "onnx", "--quantize", "int8", "--data", str(dev)]
    assert main(argv) == 0
    lines = capsys.readouterr().err.splitlines()
    assert "model_quantized.onnx" in lines[0] and re.fullmatch(DIFF_LINE, lines[1])
    assert re.fullmatch(r"int8: largest \|onnx - torch\| logit difference: \S+", lines[2])
    assert re.fullmatch(r"accuracy fp32 \d\.\d{4} -> int8 \d\.\d{4}", lines[3]), lines
    record = json.loads((run / "onnx" / "export.json").read_text())
    assert record["quantized"]["per_channel"] and record["quantized"]["max_abs_diff"] < 0.1
    assert set(record["metric"]) == {"name", "data", "fp32", "int8"}
    int8 = bertfit.load(run, device="cpu", backend="onnx")  # the quantised model when there is one
    assert int8.forward.path.name == "model_quantized.onnx"
    fp32 = load(run, device="cpu", backend="onnx", onnx_file="model.onnx")
    texts = [row["text"] for row in marker_rows(40, seed=6)]
    agree = np.mean(int8.logits(texts).argmax(1) == fp32.logits(texts).argmax(1))
    assert agree >= 0.9


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["classifier", "regression"])
def test_predict_backend_onnx_gives_the_same_records(exported, kind, tmp_path, capsys, fp32_torch):
    run, _ = exported(kind, capsys)
    inputs = write_rows(tmp_path / "in.csv", [{"id": i, "text": t} for i, t in enumerate(TEXTS)])
    records = {}
    for backend in ("torch", "onnx"):
        capsys.readouterr()
        argv = ["predict", str(run), "--input", str(inputs), "--backend", backend]
        assert main(argv) == 0
        records[backend] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records["onnx"]) == len(TEXTS)
    for ours, theirs in zip(records["onnx"], records["torch"]):
        assert ours.keys() == theirs.keys()
        assert ours.get("label") == theirs.get("label") and ours["id"] == theirs["id"]
        if kind == "regression":
            assert ours["score"] == pytest.approx(theirs["score"], abs=1e-3)
        else:
            assert ours["probabilities"].keys() == theirs["probabilities"].keys()
            for label, p in ours["probabilities"].items():
                assert p == pytest.approx(theirs["probabilities"][label], abs=1e-3)


@pytest.mark.slow
def test_evaluate_backend_onnx_scores_as_torch(exported, tmp_path, capsys, fp32_torch):
    run, _ = exported("multi_label", capsys)
    dev = write_rows(tmp_path / "dev.jsonl", multi_rows(24, 7))
    scores = {}
    for backend in ("torch", "onnx"):
        capsys.readouterr()
        assert main(["evaluate", str(run), "--data", str(dev), "--json", "--backend", backend]) == 0
        scores[backend] = json.loads(capsys.readouterr().out)
    assert scores["onnx"]["micro_f1"] == pytest.approx(scores["torch"]["micro_f1"], abs=1e-6)
    assert scores["onnx"].keys() == scores["torch"].keys()


# ---- refusals --------------------------------------------------------------------------------


def test_no_export_yet_says_how_to_make_one(runs, tmp_path, capsys):
    run = copy_run(runs("classifier"), tmp_path / "run")
    assert main(["predict", str(run), "--text", "a film", "--backend", "onnx"]) == 2
    assert capsys.readouterr().err == (
        f"bertfit: error: {run}: no ONNX model in {run}/onnx; make one with 'bertfit export "
        f"{run} --format onnx'\n"
    )


def test_an_export_of_other_weights_is_refused(exported, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    run = copy_run(exported("classifier", capsys)[0], tmp_path / "run", with_export=True)
    weights = load_file(run / "model.safetensors")
    name = next(n for n in weights if n.endswith("classifier.weight"))
    weights[name] = weights[name] + 0.5  # as if trained again
    save_file(weights, run / "model.safetensors", metadata={"format": "pt"})
    assert main(["predict", str(run), "--text", "a film", "--backend", "onnx"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bertfit: error: {run}/onnx/model.onnx: exported from other weights")
    assert f"'bertfit export {run} --format onnx --overwrite'" in err and len(err.splitlines()) == 1


def test_a_named_graph_without_a_record_is_used_with_a_note(exported, tmp_path, capsys, caplog):
    from bertfit.inference.run import load

    run, _ = exported("classifier", capsys)
    alone = tmp_path / "mine.onnx"
    shutil.copyfile(run / "onnx" / "model.onnx", alone)
    with caplog.at_level("INFO", logger="bertfit"):
        loaded = load(run, device="cpu", backend="onnx", onnx_file=str(alone))
    assert loaded.forward.path == alone and "not checked against" in caplog.text
    assert loaded.predict(["a film"])[0]["label"] in ("neg", "pos")


def test_missing_onnxruntime_names_the_package(exported, monkeypatch, tmp_path, capsys):
    run, _ = exported("classifier", capsys)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now fails
    assert main(["predict", str(run), "--text", "a film", "--backend", "onnx"]) == 2
    assert capsys.readouterr().err == (
        "bertfit: error: --backend onnx needs onnxruntime: pip install 'bertfit[onnx]'\n"
    )
    assert main(["export", str(run), "--format", "onnx", "--output", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == (
        "bertfit: error: --format onnx needs onnxruntime: pip install 'bertfit[onnx]'\n"
    )
    assert not (tmp_path / "o").exists()


def test_unfinished_and_d2l_runs_are_refused_as_by_the_hf_export(runs, tmp_path, capsys):
    cut = copy_run(runs("classifier"), tmp_path / "cut")
    (cut / "results.json").unlink()
    assert main(["export", str(cut), "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bertfit: error: {cut}: the run did not finish (no results.json)")
    assert len(err.splitlines()) == 1 and not (cut / "onnx").exists()
    d2l = copy_run(runs("classifier"), tmp_path / "d2l")
    meta = json.loads((d2l / "bertfit.json").read_text())
    meta["encoder"]["kind"] = "d2l"
    (d2l / "bertfit.json").write_text(json.dumps(meta))
    assert main(["export", str(d2l), "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert "bertfit's own format" in err and len(err.splitlines()) == 1


def test_data_goes_with_quantize(runs, tmp_path, capsys):
    dev = write_rows(tmp_path / "dev.csv", marker_rows(4, seed=5))
    argv = ["export", str(runs("classifier")), "--format", "onnx", "--data", str(dev)]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "bertfit: error: --data scores the model before and after --quantize int8; add it\n"
    )


def test_output_may_be_in_the_run_but_not_the_run_or_its_own_folders(runs, tmp_path, capsys):
    run = copy_run(runs("classifier"), tmp_path / "run")
    (run / "tensorboard").mkdir(exist_ok=True)
    (run / "tensorboard" / "events").write_text("mine")
    for output, message in [
        (run, "must not be the run directory"),
        (tmp_path, "must not be the run directory"),
        (run / "tensorboard", "a folder of the run that is not an ONNX export"),
        (run / "model.safetensors", "exists and is not a directory"),
    ]:
        argv = ["export", str(run), "--format", "onnx", "--output", str(output), "--overwrite"]
        assert main(argv) == 2
        assert message in capsys.readouterr().err, output
    assert (run / "tensorboard" / "events").read_text() == "mine"


def test_an_encoder_has_no_onnx_backend(tiny_bert, tmp_path, capsys):
    texts = tmp_path / "t.txt"
    texts.write_text("a film\n")
    argv = ["embed", str(tiny_bert), "--input", str(texts), "--output", str(tmp_path / "v.npy")]
    assert main([*argv, "--backend", "onnx"]) == 2
    err = capsys.readouterr().err
    assert "is an encoder, not a bi-encoder run" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_a_second_export_needs_overwrite_and_replaces_the_first(exported, tmp_path, capsys):
    run = copy_run(exported("classifier", capsys)[0], tmp_path / "run", with_export=True)
    before = (run / "onnx" / "export.json").read_text()
    assert main(["export", str(run), "--format", "onnx"]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert main(["export", str(run), "--format", "onnx", "--overwrite"]) == 0
    after = json.loads((run / "onnx" / "export.json").read_text())
    assert after["weights"] == json.loads(before)["weights"]
    assert not [p.name for p in run.iterdir() if p.name.startswith(".onnx")]  # no temporaries


def only_exporter(real, name: str):
    """``export_graph`` that fails for every exporter but ``name``."""

    def export_graph(graph, sample, path, exporter):
        if exporter != name:
            raise RuntimeError(f"no {exporter} here")
        real(graph, sample, path, exporter)

    return export_graph


@pytest.mark.slow
def test_a_graph_that_disagrees_is_not_published(runs, tmp_path, monkeypatch, capsys):
    import bertfit.export.onnx as export

    run = copy_run(runs("classifier"), tmp_path / "run")
    monkeypatch.setattr(export, "export_graph", only_exporter(export.export_graph, "torchscript"))
    monkeypatch.setattr(export, "largest_difference", lambda *_: 0.5)
    assert main(["export", str(run), "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert "no correct ONNX graph: torchscript: largest |onnx - torch| difference 5.0e-01" in err
    assert "dynamo: RuntimeError: no dynamo here" in err and "nothing was written" in err
    assert not (run / "onnx").exists() and not [p for p in run.iterdir() if p.name[0] == "."]


@pytest.mark.slow
def test_the_dynamo_exporter_is_the_fallback(runs, tmp_path, monkeypatch):
    import bertfit
    import bertfit.export.onnx as export

    run = copy_run(runs("pair"), tmp_path / "run")
    monkeypatch.setattr(export, "export_graph", only_exporter(export.export_graph, "dynamo"))
    assert main(["export", str(run), "--format", "onnx"]) == 0
    record = json.loads((run / "onnx" / "export.json").read_text())
    assert record["exporter"] == "dynamo" and record["max_abs_diff"] < 1e-3
    assert listing(run / "onnx") == sorted(record["files"])  # weights inside, no .data file
    got = bertfit.load(run, device="cpu", backend="onnx").logits(TEXTS, PAIRS, batch_size=2)
    assert np.abs(got - fp32_logits(run, TEXTS, PAIRS)).max() < 1e-3


@pytest.mark.slow
def test_onnx_predicts_without_the_pytorch_model_and_loads_it_to_explain(exported, capsys):
    from bertfit.inference.run import load

    run_dir, _ = exported("classifier", capsys)
    run = load(run_dir, device="cpu", backend="onnx")
    assert run.torch_model is None  # predicting needs only the graph: no transformers model load
    assert run.predict(["a great film"])[0]["label"] in ("neg", "pos")
    assert run.torch_model is None
    words = [w["word"] for w in run.explain("a great film", steps=4)["words"]]
    assert words == ["a", "great", "film"] and run.torch_model is not None


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["classifier", "bi_encoder"])
def test_serve_backend_onnx_answers_as_the_torch_backend(exported, kind, capsys):
    from fastapi.testclient import TestClient

    from bertfit.config.serve import ServeConfig
    from bertfit.serve.app import create_app, load_served

    run_dir, _ = exported(kind, capsys)
    answers = {}
    for backend in ("torch", "onnx"):
        config = ServeConfig(run_dir=str(run_dir), backend=backend, access_log=False)
        with TestClient(create_app(config, load_served(config))) as client:
            while client.get("/health").status_code != 200:
                pass
            assert client.get("/info").json()["backend"] == backend
            if kind == "classifier":
                answers[backend] = client.post(
                    "/predict", json={"inputs": ["a great film", "x"]}
                ).json()
                explained = client.post("/explain", json={"inputs": "a great film", "steps": 4})
                assert explained.status_code == 200  # onnx loads the PyTorch model for it
            else:
                body = {
                    "inputs": {"source_sentence": "a great film", "sentences": ["great", "x y"]}
                }
                answers[backend] = client.post("/similarity", json=body).json()
    if kind == "classifier":
        for a, b in zip(answers["torch"], answers["onnx"]):
            assert a.keys() == b.keys() and a["label"] == b["label"]
            for label, p in a["probabilities"].items():
                assert b["probabilities"][label] == pytest.approx(p, abs=2e-2)  # bf16 vs fp32
    else:
        got = answers["onnx"]["similarities"]
        assert got == pytest.approx(answers["torch"]["similarities"], abs=2e-2)
