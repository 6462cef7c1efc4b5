"""Reliability of training: checkpoints, exact resume after SIGKILL/SIGTERM/SIGINT, crashes while
saving, a full disk, non-finite losses and out-of-memory errors.

The kill tests run the real CLI in a subprocess that sends itself a signal right after a chosen
optimizer step, so the signal lands mid-epoch at a known point and the test never races a timer.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from bertfit.cli.main import main
from bertfit.training.checkpoint import find_checkpoint, list_checkpoints, load_training_state
from tests.conftest import marker_rows, write_rows

ROOT = Path(__file__).resolve().parent.parent

# Sends `how` to itself right after optimizer step `at`, then runs the CLI with the rest of argv.
DRIVER = """
import os, signal, sys
import bertfit.training.fit as training
from bertfit.cli.main import main

at, how = int(sys.argv[1]), getattr(signal, sys.argv[2])
original, count = training.optimizer_step, [0]

def step(*args):
    done = original(*args)
    count[0] += 1
    if count[0] == at:
        os.kill(os.getpid(), how)
    return done

training.optimizer_step = step
sys.exit(main(sys.argv[3:]))
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("resume")
    return {
        "root": root,
        "train": write_rows(root / "train.csv", marker_rows(200, seed=1)),
        "dev": write_rows(root / "dev.csv", marker_rows(60, seed=2)),
    }


def train_args(data: dict, model: Path, output: Path, *extra: str) -> list[str]:
    # 200 examples / batch 16 = 13 steps an epoch; dropout on, so the random state matters
    return [
        "train",
        "--train",
        str(data["train"]),
        "--dev",
        str(data["dev"]),
        "--model",
        str(model),
        "--output",
        str(output),
        "--epochs",
        "3",
        "--batch-size",
        "16",
        "--lr",
        "3e-3",
        "--warmup-ratio",
        "0.1",
        "--dropout",
        "0.1",
        "--seed",
        "3",
        "--threads",
        "1",
        "--save-steps",
        "5",
        "--max-length",
        "64",
        "--no-progress",
        *extra,
    ]


def run_cli(args: list[str], data: dict, kill: tuple[int, str] | None = None):
    env = {**os.environ, "BERTFIT_CACHE": str(data["root"] / "cache"), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "bertfit", *args]
    if kill is not None:
        command = [sys.executable, "-c", DRIVER, str(kill[0]), kill[1], *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def weights(run: Path) -> dict:
    return load_file(run / "model.safetensors")


def assert_same_run(a: Path, b: Path, exact: bool = True) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        if exact:
            assert wa[name].equal(wb[name]), name
        else:
            assert (wa[name] - wb[name]).abs().max() < 1e-4, name
    ra, rb = (json.loads((run / "results.json").read_text()) for run in (a, b))
    assert ra["dev"] == rb["dev"] and ra["best_step"] == rb["best_step"]
    dev = lambda run: [  # noqa: E731
        (r["step"], r["dev"], r["train_loss"])
        for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
    ]
    assert dev(a) == dev(b)
    steps = lambda run: [  # noqa: E731
        (r["step"], r["loss"])
        for r in map(json.loads, (run / "steps.jsonl").read_text().splitlines())
    ]
    assert steps(a) == steps(b)


@pytest.fixture(scope="module")
def reference(data, tiny_bert) -> Path:
    """The uninterrupted deterministic run every resumed run must equal."""
    out = data["root"] / "reference"
    done = run_cli(train_args(data, tiny_bert, out, "--deterministic", "--keep-checkpoints"), data)
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.slow
def test_deterministic_runs_are_bit_identical(data, tiny_bert, reference):
    again = data["root"] / "again"
    done = run_cli(train_args(data, tiny_bert, again, "--deterministic"), data)
    assert done.returncode == 0, done.stderr
    assert_same_run(reference, again)


def test_checkpoints_are_complete_and_pruned(reference):
    checkpoints = list_checkpoints(reference)
    # epochs end at steps 13, 26, 39; --save-total-limit 1 keeps the last one and the best
    assert checkpoints[-1].step == 39
    best_step = json.loads((reference / "results.json").read_text())["best_step"]
    assert len(checkpoints) <= 2 and best_step in [c.step for c in checkpoints]
    for c in checkpoints:
        for name in ("model.safetensors", "config.json", "optimizer.pt", "rng.pt", "sampler.pt"):
            assert (c.path / name).is_file(), (c.path, name)
    assert not list(reference.glob(".checkpoint-*"))


def test_pruning_keeps_the_last_k_and_the_best(tmp_path):
    from bertfit.training.checkpoint import best_checkpoint, prune_checkpoints

    for step, score in [(5, 0.6), (10, None), (13, 0.9), (15, None), (20, 0.7), (26, 0.8)]:
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "trainer_state.json").write_text(json.dumps({"step": step, "dev_score": score}))
    (tmp_path / ".checkpoint-30.abc.tmp").mkdir()  # half written: never listed
    assert best_checkpoint(tmp_path).step == 13
    prune_checkpoints(tmp_path, keep=2)
    assert [c.step for c in list_checkpoints(tmp_path)] == [13, 20, 26]
    assert find_checkpoint(tmp_path, "best").step == 13
    assert find_checkpoint(tmp_path, "last").step == 26
    assert find_checkpoint(tmp_path, "checkpoint-20").step == 20


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(data, tiny_bert, reference):
    out = data["root"] / "killed"
    args = train_args(data, tiny_bert, out, "--deterministic")
    killed = run_cli(args, data, kill=(18, "SIGKILL"))  # epoch 2, after checkpoint-15
    assert killed.returncode == -signal.SIGKILL
    assert not (out / "results.json").exists()
    assert [c.step for c in list_checkpoints(out)][-1] == 15
    # an unfinished run is refused by predict, unless a checkpoint is named
    refused = run_cli(["predict", str(out), "--text", "a b c"], data)
    assert refused.returncode == 2
    assert "did not finish" in refused.stderr and "--resume" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    resumed = run_cli(["train", "--resume", str(out), "--no-progress"], data)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr and "checkpoint-15" in resumed.stderr
    assert_same_run(reference, out)


@pytest.mark.slow
@pytest.mark.parametrize("how, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_signal_saves_a_checkpoint_and_exits_with_advice(data, tiny_bert, reference, how, code):
    out = data["root"] / f"stopped-{how}"
    args = train_args(data, tiny_bert, out, "--deterministic")
    stopped = run_cli(args, data, kill=(17, how))
    assert stopped.returncode == code, stopped.stderr
    last = stopped.stderr.strip().splitlines()[-1]
    assert last.startswith(f"bertfit: error: {how} at step 17: saved ")
    assert f"bertfit train --resume {out}" in last
    assert "Traceback" not in stopped.stderr
    assert [c.step for c in list_checkpoints(out)][-1] == 17
    again = run_cli(args, data)  # the same command without --resume says how to continue
    assert again.returncode == 2
    assert "an unfinished run with checkpoint-17; continue it with --resume auto" in again.stderr
    # the same command again with --resume auto picks it up
    resumed = run_cli([*args, "--resume", "auto"], data)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(reference, out)


@pytest.mark.slow
def test_resume_puts_back_the_best_model_of_its_checkpoint(data, reference, tmp_path):
    """A best model saved after the last checkpoint (by a run then killed) is replaced by the one
    the checkpoint knew, so the finished run's model matches its own record."""
    import shutil

    from safetensors.torch import save_file

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    (run / "results.json").unlink()
    last = list_checkpoints(run)[-1]
    assert (last.path / "best_model" / "model.safetensors").is_file()
    save_file({k: v * 0 for k, v in weights(reference).items()}, run / "model.safetensors")
    resumed = run_cli(["train", "--resume", str(run), "--no-progress"], data)
    assert resumed.returncode == 0, resumed.stderr
    assert (run / "model.safetensors").read_bytes() == (
        reference / "model.safetensors"
    ).read_bytes()
    results = [json.loads((r / "results.json").read_text()) for r in (reference, run)]
    assert results[0]["dev_ci"] == results[1]["dev_ci"]


@pytest.mark.slow
def test_tensorboard_drops_the_events_logged_after_the_checkpoint(data, tiny_bert):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = data["root"] / "board"
    args = train_args(data, tiny_bert, out, "--tensorboard", "--eval-steps", "4", "--epochs", "2")
    killed = run_cli(args, data, kill=(18, "SIGKILL"))  # evaluated at 16, after checkpoint-15
    assert killed.returncode == -signal.SIGKILL
    resumed = run_cli(["train", "--resume", str(out), "--no-progress"], data)
    assert resumed.returncode == 0, resumed.stderr
    board = EventAccumulator(str(out / "tensorboard"))
    board.Reload()
    steps = [event.step for event in board.Scalars("dev/accuracy")]
    assert steps == [4, 8, 12, 13, 16, 20, 24, 26]


@pytest.mark.slow
def test_resume_of_a_finished_run_does_nothing(data, reference):
    before = (reference / "results.json").read_bytes()
    done = run_cli(["train", "--resume", str(reference), "--no-progress"], data)
    assert done.returncode == 0, done.stderr
    assert "finished run" in done.stderr
    assert (reference / "results.json").read_bytes() == before


def test_resume_refuses_changed_settings(data, reference, capsys):
    code = main(["train", "--resume", str(reference), "--epochs", "5", "--lr", "1e-3"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "--epochs 5 (the run has 3)" in err and "--lr 0.001 (the run has 0.003)" in err


def test_predict_and_evaluate_take_a_checkpoint(data, reference, capsys):
    capsys.readouterr()
    assert main(["predict", str(reference), "--checkpoint", "last", "--text", "a b c"]) == 0
    assert capsys.readouterr().out.split()[:2] in (["label:", "pos"], ["label:", "neg"])
    code = main(["evaluate", str(reference), "--data", str(data["dev"]), "--checkpoint", "best"])
    assert code == 0
    assert main(["predict", str(reference), "--checkpoint", "7", "--text", "x"]) == 2
    assert "no checkpoint '7'; choose best, last or one of" in capsys.readouterr().err


# In-process tests: failures injected with monkeypatch.


def small_config(data: dict, model: Path, output: Path, **changes):
    from bertfit.config.train import TrainConfig

    base = dict(
        train=str(data["train"]),
        dev=str(data["dev"]),
        model=str(model),
        output=str(output),
        epochs=2,
        batch_size=16,
        lr=3e-3,
        seed=3,
        save_steps=5,
        max_length=64,
        progress=False,
        deterministic=True,
    )
    return TrainConfig(**{**base, **changes})


@pytest.mark.slow
def test_crash_while_saving_keeps_the_previous_checkpoint(
    data, tiny_bert, tmp_path, monkeypatch, cache_env
):
    import bertfit
    import bertfit.training.checkpoint as checkpoint

    real, calls = checkpoint._order_tensors, []

    def failing(order):  # written after the model, optimizer and generators
        calls.append(1)
        if len(calls) == 2:  # checkpoint-10, half written
            raise RuntimeError("simulated crash inside the checkpoint writer")
        return real(order)

    monkeypatch.setattr(checkpoint, "_order_tensors", failing)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        bertfit.train(small_config(data, tiny_bert, out))
    assert [c.step for c in list_checkpoints(out)] == [5]
    assert not list(out.glob(".checkpoint-*"))  # the half-written folder is gone
    previous = find_checkpoint(out, "last")
    assert previous.state["step"] == 5 and previous.state["batch"] == 5
    run = bertfit.load(out, checkpoint="last")
    assert len(run.predict(["a b c"])) == 1
    monkeypatch.setattr(checkpoint, "_order_tensors", real)
    finished = bertfit.train(small_config(data, tiny_bert, out, resume=str(out)))
    assert finished.results["steps"] == 26


def test_full_disk_is_reported_and_the_last_checkpoint_stays(
    data, tiny_bert, tmp_path, monkeypatch, cache_env, capsys
):
    import bertfit.training.checkpoint as checkpoint

    real, calls = checkpoint._order_tensors, []

    def full(order):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", "sampler.pt")
        return real(order)

    monkeypatch.setattr(checkpoint, "_order_tensors", full)
    out = tmp_path / "run"
    args = train_args(data, tiny_bert, out, "--epochs", "2")
    args[args.index("--threads") + 1] = "2"
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("bertfit: error: no space left on the device")
    assert "checkpoint-5 is intact" in err and f"--resume {out}" in err
    assert [c.step for c in list_checkpoints(out)] == [5]
    load_training_state(  # the surviving checkpoint still loads completely
        out / "checkpoint-5", *_fresh_training_objects(tiny_bert)
    )


def _fresh_training_objects(model_dir: Path):
    import torch

    from bertfit.models.classifier import build_classifier
    from bertfit.models.encoders import resolve_encoder
    from bertfit.training.optim import linear_schedule, make_optimizer

    model = build_classifier(resolve_encoder(str(model_dir)), ["neg", "pos"])
    optimizer = make_optimizer(model, 1e-3, 0.01, torch.device("cpu"))
    return optimizer, linear_schedule(optimizer, 1, 10), torch.amp.GradScaler("cpu", enabled=False)


def _poison_loss(monkeypatch, at: int) -> None:
    from bertfit.data.labels import Problem

    real, calls = Problem.loss, []

    def loss(self, logits, targets):
        calls.append(1)
        value = real(self, logits, targets)
        return value * float("nan") if len(calls) == at else value

    monkeypatch.setattr(Problem, "loss", loss)


def test_nonfinite_loss_stops_with_the_step_and_keeps_the_checkpoint(
    data, tiny_bert, tmp_path, monkeypatch, cache_env, capsys
):
    _poison_loss(monkeypatch, at=8)
    out = tmp_path / "run"
    assert main(train_args(data, tiny_bert, out, "--threads", "2")) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("bertfit: error: step 8 (epoch 1, batch 8): the loss is nan; stopped.")
    assert "checkpoint-5" in err and "--skip-nonfinite" in err
    assert [c.step for c in list_checkpoints(out)] == [5]
    assert not (out / "results.json").exists()


@pytest.mark.slow
def test_skip_nonfinite_skips_the_batch_and_finishes(
    data, tiny_bert, tmp_path, monkeypatch, cache_env, caplog
):
    import bertfit

    _poison_loss(monkeypatch, at=8)
    run = bertfit.train(
        small_config(data, tiny_bert, tmp_path / "run", skip_nonfinite=True, keep_checkpoints=True)
    )
    assert "step 8 (epoch 1, batch 8): the loss is nan; batch skipped" in caplog.text
    assert run.results["steps"] == 26
    state = list_checkpoints(tmp_path / "run")[-1].state
    assert state["skipped_batches"] == 1
    assert all(t.isfinite().all() for t in weights(tmp_path / "run").values())


def test_out_of_memory_gives_advice(data, tiny_bert, tmp_path, monkeypatch, cache_env, capsys):
    import torch

    import bertfit.training.objectives as training

    def forward_of(model):
        def forward(**batch):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

        return forward

    monkeypatch.setattr(training, "training_forward", forward_of)
    out = tmp_path / "run"
    assert main(train_args(data, tiny_bert, out, "--threads", "2")) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("bertfit: error: out of memory on cpu with --batch-size 16")
    assert "--grad-accum 2 (the same batch of 16" in err and "--max-length 64" in err


BI_ENCODER_OPTIONS = [
    "--dev-fraction", "0.2", "--epochs", "2", "--batch-size", "16", "--lr", "3e-3",
    "--dropout", "0.1", "--threads", "1", "--save-steps", "4", "--deterministic",
    "--no-progress", "--keep-checkpoints",
]  # fmt: skip


@pytest.fixture(scope="module")
def pair_file(data) -> Path:
    from tests.test_biencoder import pair_rows

    return write_rows(data["root"] / "pairs.jsonl", pair_rows(120, 1, "softmax"))


def bi_encoder_args(pair_file: Path, model: Path, output: Path) -> list[str]:
    from tests.test_biencoder import pair_training

    return [*pair_training(pair_file, model, output, "softmax"), *BI_ENCODER_OPTIONS]


@pytest.fixture(scope="module")
def bi_encoder_cut(data, tiny_bert, pair_file) -> dict:
    """A bi-encoder run SIGKILLed after step 9, then resumed to its end; the processes and the
    checkpoints the kill left are kept for the tests to check."""
    cut = data["root"] / "pairs-cut"
    killed = run_cli(bi_encoder_args(pair_file, tiny_bert, cut), data, (9, "SIGKILL"))
    left = [c.step for c in list_checkpoints(cut)]
    resumed = run_cli(["train", "--resume", str(cut), "--no-progress"], data)
    return {"dir": cut, "killed": killed, "checkpoints_left": left, "resumed": resumed}


@pytest.mark.slow
def test_bi_encoder_run_resumes_exactly(data, tiny_bert, pair_file, bi_encoder_cut):
    whole, cut = data["root"] / "pairs-whole", bi_encoder_cut["dir"]
    done = run_cli(bi_encoder_args(pair_file, tiny_bert, whole), data)
    assert done.returncode == 0, done.stderr
    assert bi_encoder_cut["killed"].returncode == -signal.SIGKILL
    assert bi_encoder_cut["checkpoints_left"][-1] == 8
    resumed = bi_encoder_cut["resumed"]
    assert resumed.returncode == 0, resumed.stderr
    for name in ("model.safetensors", "nli_head.safetensors"):
        a, b = load_file(whole / name), load_file(cut / name)
        assert all(a[k].equal(b[k]) for k in a), name
    results = [json.loads((run / "results.json").read_text()) for run in (whole, cut)]
    assert results[0]["dev"] == results[1]["dev"]


def test_unfinished_bi_encoder_run_is_refused_but_its_checkpoint_embeds(bi_encoder_cut, capsys):
    cut, resumed = bi_encoder_cut["dir"], bi_encoder_cut["resumed"]
    assert resumed.returncode == 0, resumed.stderr  # a finished run, made unfinished below
    (cut / "results.json").rename(cut / "results.moved")
    try:
        assert main(["similarity", str(cut), "--text", "a b", "--pair", "a c"]) == 2
        err = capsys.readouterr().err
        assert "did not finish" in err and "checkpoint-" in err and "--resume" in err
        checkpoint = find_checkpoint(cut, "last").path
        assert main(["similarity", str(checkpoint), "--text", "a b", "--pair", "a c"]) == 0
    finally:
        (cut / "results.moved").rename(cut / "results.json")
