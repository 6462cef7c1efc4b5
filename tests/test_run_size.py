"""A finished run is about its model's size: checkpoints are dropped at the end (unless
--keep-checkpoints), kept ones hard-link weights the run already holds, --save-total-limit 0
saves none, and --checkpoint on such a run says what is left."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

import bertfit
from bertfit.cli.main import main
from bertfit.training.checkpoint import list_checkpoints, save_checkpoint
from tests.conftest import marker_rows, write_rows

QUICK = ["--epochs", "2", "--batch-size", "16", "--lr", "3e-3", "--warmup-ratio", "0"]
QUICK += ["--max-length", "32", "--threads", "1", "--no-progress", "--seed", "1"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("size")
    return {
        "root": root,
        "train": write_rows(root / "train.csv", marker_rows(48, seed=1)),
        "dev": write_rows(root / "dev.csv", marker_rows(16, seed=2)),
    }


def train_argv(files: dict, model: Path, out: Path, *extra: str) -> list[str]:
    data = ["--train", str(files["train"]), "--dev", str(files["dev"]), "--model", str(model)]
    return ["train", *data, "--output", str(out), *QUICK, *extra]


@pytest.fixture(scope="module")
def finished(files, tiny_bert) -> Path:
    """A run trained with the defaults: its checkpoints are dropped when it finishes."""
    out = files["root"] / "finished"
    assert main(train_argv(files, tiny_bert, out)) == 0
    return out


def tree_bytes(folder: Path) -> int:
    """What ``du -sb`` counts: each file once, however many hard links it has."""
    seen, total = set(), 0
    for path in folder.rglob("*"):
        if path.is_file() and path.stat().st_ino not in seen:
            seen.add(path.stat().st_ino)
            total += path.stat().st_size
    return total


@pytest.mark.slow
def test_a_finished_run_drops_its_checkpoints(finished, caplog):
    assert list_checkpoints(finished) == []
    assert not [p.name for p in finished.iterdir() if p.name.startswith((".", "checkpoint-"))]
    model = (finished / "model.safetensors").stat().st_size
    others = tree_bytes(finished) - model  # card, report and PNGs, metrics, config, tokenizer
    assert others < 400_000, sorted(p.name for p in finished.iterdir())


@pytest.mark.slow
def test_dropping_is_said_once_and_keep_checkpoints_keeps_them(files, tiny_bert, tmp_path, caplog):
    with caplog.at_level("INFO", logger="bertfit"):
        assert main(train_argv(files, tiny_bert, tmp_path / "a")) == 0
    assert "removed checkpoint-3, checkpoint-6" in caplog.text
    assert "--keep-checkpoints keeps it" in caplog.text
    kept = tmp_path / "kept"
    assert main(train_argv(files, tiny_bert, kept, "--keep-checkpoints")) == 0
    assert list_checkpoints(kept)[-1].step == 6
    # weights with the same bytes are one file, wherever the run holds them
    by_content: dict[bytes, set[int]] = {}
    for path in kept.rglob("model.safetensors"):
        by_content.setdefault(path.read_bytes(), set()).add(path.stat().st_ino)
    assert all(len(inodes) == 1 for inodes in by_content.values())


class _Stub:
    def state_dict(self) -> dict:
        return {}


def test_a_checkpoint_links_the_weights_the_run_already_holds(tmp_path):
    """Before: the checkpoint wrote a second, byte-identical model.safetensors beside the run's."""
    import torch

    run = tmp_path / "run"
    run.mkdir()
    (run / "model.safetensors").write_bytes(b"w" * 4096)  # the best model, just saved
    (run / "config.json").write_text("{}")

    def write_model(folder: Path) -> None:
        (folder / "model.safetensors").write_bytes(b"w" * 4096)
        (folder / "config.json").write_text('{"other": 1}')

    scaler = torch.amp.GradScaler("cpu", enabled=False)
    path = save_checkpoint(run, 3, write_model, _Stub(), _Stub(), scaler, {"step": 3}, [[0]])
    assert os.path.samefile(path / "model.safetensors", run / "model.safetensors")
    assert os.path.samefile(path / "best_model" / "model.safetensors", run / "model.safetensors")
    assert not os.path.samefile(path / "config.json", run / "config.json")  # not the same bytes
    assert (path / "config.json").read_text() == '{"other": 1}'
    assert not list(path.glob(".*"))


def test_checkpoint_best_of_a_dropped_run_is_its_model(finished, files, capsys, caplog):
    capsys.readouterr()
    assert main(["predict", str(finished), "--text", "a great film"]) == 0
    plain = capsys.readouterr().out
    assert main(["predict", str(finished), "--checkpoint", "best", "--text", "a great film"]) == 0
    captured = capsys.readouterr()
    assert captured.out == plain
    step = json.loads((finished / "results.json").read_text())["best_step"]
    assert f"--checkpoint best is the run's own model (step {step})" in caplog.text
    assert bertfit.load(finished, checkpoint="best").results["checkpoint_step"] == step


@pytest.mark.parametrize("which", ["last", "6", "checkpoint-3"])
def test_other_checkpoints_of_a_dropped_run_are_refused_in_one_line(finished, files, which, capsys):
    capsys.readouterr()
    argv = ["evaluate", str(finished), "--data", str(files["dev"]), "--checkpoint", which]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == (
        f"bertfit: error: {finished}: no checkpoint {which!r}: its checkpoints were removed when "
        "the run finished (train with --keep-checkpoints to keep them); without --checkpoint, or "
        "with --checkpoint best, it uses the run's own model (the best one)\n"
    )


def test_save_total_limit_0_saves_no_checkpoint(files, tiny_bert, tmp_path, monkeypatch, capsys):
    import bertfit.training.fit as fit

    saved = []
    monkeypatch.setattr(fit, "save_checkpoint", lambda *a, **k: saved.append(a))
    out = tmp_path / "run"
    assert main(train_argv(files, tiny_bert, out, "--save-total-limit", "0")) == 0
    assert saved == [] and (out / "results.json").is_file()
    capsys.readouterr()
    assert main(["predict", str(out), "--checkpoint", "last", "--text", "x"]) == 2
    assert "no checkpoint 'last': it was trained with --save-total-limit 0, which saves none" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--save-steps", "2"], "--save-steps needs checkpoints, but --save-total-limit 0"),
        (["--keep-checkpoints"], "--keep-checkpoints needs checkpoints, but --save-total-limit 0"),
    ],
)
def test_save_total_limit_0_refuses_options_that_need_checkpoints(
    files, tiny_bert, tmp_path, extra, expected, capsys
):
    out = tmp_path / "run"
    assert main(train_argv(files, tiny_bert, out, "--save-total-limit", "0", *extra)) == 2
    assert expected in capsys.readouterr().err
    assert not out.exists()


def test_a_signal_without_checkpoints_says_the_run_cannot_resume(
    files, tiny_bert, tmp_path, monkeypatch, capsys, caplog
):
    import bertfit.training.fit as fit

    real, count = fit.optimizer_step, []

    def step(*args):
        done = real(*args)
        count.append(1)
        if len(count) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return done

    monkeypatch.setattr(fit, "optimizer_step", step)
    out = tmp_path / "run"
    argv = train_argv(files, tiny_bert, out, "--save-total-limit", "0")
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "SIGINT: stopping after this step; --save-total-limit 0 saves no checkpoint" in (
        caplog.text
    )
    assert err.strip().splitlines()[-1] == (
        "bertfit: error: SIGINT at step 2: stopped without a checkpoint (--save-total-limit 0 "
        "saves none), so the run cannot be resumed; run the same command with --overwrite to "
        "train it again"
    )
    assert list_checkpoints(out) == [] and not (out / "results.json").exists()
    monkeypatch.setattr(fit, "optimizer_step", real)
    assert main(["train", "--resume", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"bertfit: error: --resume {out}: {out} was trained with --save-total-limit 0, so it has "
        "no checkpoint to resume from; run its training command again with --overwrite (or with "
        "--resume auto)\n"
    )
    assert main([*argv, "--resume", "auto"]) == 0  # starts again
    assert (out / "results.json").is_file()


@pytest.mark.slow
def test_a_run_started_with_overwrite_can_be_resumed(finished, files, tiny_bert, tmp_path):
    """Before: the stored --overwrite came back with --resume and the two were refused together."""
    out = tmp_path / "run"
    assert main(train_argv(files, tiny_bert, out, "--overwrite")) == 0
    assert main(["train", "--resume", str(out)]) == 0  # a finished run: nothing to do


@pytest.mark.slow
def test_bi_encoder_checkpoint_best_of_a_dropped_run(tiny_bert, tmp_path, cache_env, capsys):
    from tests.test_biencoder import pair_rows, pair_training

    train = write_rows(tmp_path / "pairs.csv", pair_rows(40, 1, "cosine"))
    out = tmp_path / "run"
    assert main([*pair_training(train, tiny_bert, out, "cosine"), *QUICK[:6], "--no-progress"]) == 0
    assert list_checkpoints(out) == []
    score = ["evaluate", str(out), "--objective", "cosine", "--data", str(train)]
    score += ["--text-column", "a", "--pair-column", "b", "--json"]
    capsys.readouterr()
    assert main(score) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main([*score, "--checkpoint", "best"]) == 0
    assert json.loads(capsys.readouterr().out) == plain
