"""``bertfit tune`` end to end on the tiny model: budgets across reruns and processes, the best run
kept and the others stripped, pruning, killed trials, grids, the shared data, and bad input."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import marker_rows, write_rows

pytest.importorskip("optuna")

import bertfit  # noqa: E402
from bertfit.cli.main import main  # noqa: E402
from bertfit.config.tune import TuneConfig  # noqa: E402

SPACE = "lr=1e-4:1e-2:log,batch_size=16|32"


@pytest.fixture
def data(tmp_path) -> dict:
    return {
        "train": write_rows(tmp_path / "train.jsonl", marker_rows(64, 0)),
        "dev": write_rows(tmp_path / "dev.jsonl", marker_rows(24, 1)),
    }


def tune_args(data: dict, model: Path, output: Path, *extra: str) -> list[str]:
    return [
        "tune", "--train", str(data["train"]), "--dev", str(data["dev"]), "--model", str(model),
        "--output", str(output), "--epochs", "1", "--no-progress", *extra,
    ]  # fmt: skip


def rows(output: Path) -> list[dict]:
    with open(output / "trials.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def weights(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.suffix in (".safetensors", ".bin", ".pt")]


@pytest.mark.slow
def test_diverging_trial_best_kept_others_stripped_and_rerun_adds_exactly(
    tiny_bert, data, tmp_path, capsys
):
    out = tmp_path / "study"
    # a grid of 4: two sane learning rates and two that blow the weights up
    space = "lr=3e-3|1e9,seed=1|2"
    assert main(tune_args(data, tiny_bert, out, "--space", space, "--n-trials", "4")) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    table = rows(out)
    assert len(table) == 4 and len({r["number"] for r in table}) == 4
    diverged = [r for r in table if float(r["lr"]) > 1]
    assert len(diverged) == 2
    assert all(r["state"] == "fail" and "the loss is nan" in r["note"] for r in diverged)
    best = json.loads((out / "best.json").read_text())
    assert line.startswith(f"best trial {best['trial']}: accuracy ")
    assert "reproduce: bertfit train " in line
    run = bertfit.load(out / "best")
    assert run.predict(["the great movie"])[0]["label"] in ("pos", "neg")
    assert weights(out / "trials") == []  # every other trial keeps its metrics only
    for folder in (out / "trials").iterdir():
        assert (folder / "results.json").is_file()
    assert (out / "tune.html").read_text().count("data:image/png;base64,") >= 2

    # the same command with a larger total runs exactly the difference
    grid_free = ["--space", "lr=1e-4:1e-2:log,seed=1:9", "--n-trials", "6"]
    assert main(tune_args(data, tiny_bert, tmp_path / "s2", *grid_free)) == 0
    assert len(rows(tmp_path / "s2")) == 6
    assert main(tune_args(data, tiny_bert, tmp_path / "s2", *grid_free[:2], "--n-trials", "8")) == 0
    table = rows(tmp_path / "s2")
    assert [int(r["number"]) for r in table] == list(range(8))
    assert main(tune_args(data, tiny_bert, tmp_path / "s2", *grid_free[:2], "--n-trials", "8")) == 0
    assert len(rows(tmp_path / "s2")) == 8  # nothing left to run


@pytest.mark.slow
def test_grid_runs_each_point_once(tiny_bert, data, tmp_path):
    out = tmp_path / "grid"
    assert main(tune_args(data, tiny_bert, out, "--space", "batch_size=16|32,lr=1e-3|2e-3")) == 0
    points = sorted((r["batch_size"], r["lr"]) for r in rows(out))
    assert points == sorted({(b, lr) for b in ("16", "32") for lr in ("0.001", "0.002")})


@pytest.mark.slow
def test_data_read_and_tokenised_once_per_study(tiny_bert, data, tmp_path, monkeypatch):
    import bertfit.data.packing as packing
    import bertfit.training.inputs as inputs

    calls = {"pack": 0, "read": 0}
    pack, read = packing.pack_texts, inputs.read_training_data

    def counted_pack(*args, **kwargs):
        calls["pack"] += 1
        return pack(*args, **kwargs)

    def counted_read(*args, **kwargs):
        calls["read"] += 1
        return read(*args, **kwargs)

    monkeypatch.setattr(packing, "pack_texts", counted_pack)
    monkeypatch.setattr(inputs, "read_training_data", counted_read)
    monkeypatch.setenv("BERTFIT_CACHE", str(tmp_path / "cache"))
    config = TuneConfig(
        train=str(data["train"]), dev=str(data["dev"]), model=str(tiny_bert),
        output=str(tmp_path / "once"), epochs=1, n_trials=3, space="lr=1e-4:1e-2:log",
        progress=False,
    )  # fmt: skip
    result = bertfit.tune(config)
    assert result.states == {"complete": 3}
    assert calls == {"pack": 2, "read": 1}  # train and dev tokenised once, for all 3 trials


@pytest.mark.slow
def test_pruned_trials_stop_at_once_and_leave_no_folder(tiny_bert, data, tmp_path, monkeypatch):
    import optuna

    import bertfit.tuning.run as tune_run

    # a pruner that stops every trial at its first report
    monkeypatch.setattr(
        tune_run, "make_pruner", lambda *a: optuna.pruners.ThresholdPruner(lower=2.0)
    )
    config = TuneConfig(
        train=str(data["train"]), dev=str(data["dev"]), model=str(tiny_bert),
        output=str(tmp_path / "pruned"), epochs=2, eval_steps=1, batch_size=16, n_trials=2,
        space="lr=1e-4:1e-2:log", progress=False,
    )  # fmt: skip
    result = bertfit.tune(config)
    assert result.states == {"pruned": 2} and result.best_trial is None
    table = rows(tmp_path / "pruned")
    assert [r["note"] for r in table] == ["pruned after 16 training examples"] * 2
    assert not (tmp_path / "pruned" / "best").exists()
    assert list((tmp_path / "pruned" / "trials").iterdir()) == []


@pytest.mark.slow
def test_killed_trial_is_marked_failed_and_its_slot_rerun(tiny_bert, data, tmp_path):
    import optuna

    out = tmp_path / "killed"
    args = tune_args(data, tiny_bert, out, "--space", SPACE, "--n-trials", "1")
    assert main(args) == 0
    # a trial left RUNNING by a process that is gone, as after kill -9
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    study = optuna.load_study(study_name="bertfit", storage=f"sqlite:///{out / 'study.db'}")
    trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)})
    trial.set_user_attr("host", os.uname().nodename)
    trial.set_user_attr("pid", gone.pid)
    args[args.index("--n-trials") + 1] = "2"
    assert main(args) == 0
    states = [r["state"] for r in rows(out)]
    assert states.count("complete") == 2 and states.count("fail") == 1
    killed = next(r for r in rows(out) if r["state"] == "fail")
    assert "killed" in killed["note"]


@pytest.mark.slow
def test_two_processes_share_one_sqlite_study_without_duplicates(tiny_bert, data, tmp_path):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    commands = [
        [sys.executable, "-m", "bertfit", *tune_args(data, tiny_bert, tmp_path / f"m{i}"),
         "--space", SPACE, "--n-trials", "6", "--storage", storage]
        for i in range(2)
    ]  # fmt: skip
    procs = [
        subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for c in commands
    ]
    outputs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    import optuna

    trials = optuna.load_study(study_name="bertfit", storage=storage).trials
    counted = [t for t in trials if not t.user_attrs.get("surplus")]
    assert len(counted) == 6
    assert sorted(t.number for t in counted) == sorted({t.number for t in counted})
    assert all(t.state.name == "COMPLETE" for t in counted)
    ran_here = [len(list((tmp_path / f"m{i}" / "trials").iterdir())) for i in range(2)]
    kept = [int((tmp_path / f"m{i}" / "best").is_dir()) for i in range(2)]
    assert sum(ran_here) + sum(kept) == 6  # each trial ran in exactly one process


@pytest.mark.slow
def test_workers_run_the_total_side_by_side(tiny_bert, data, tmp_path):
    out = tmp_path / "workers"
    args = tune_args(data, tiny_bert, out, "--space", SPACE, "--n-trials", "4", "--workers", "2")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run(
        [sys.executable, "-m", "bertfit", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    table = rows(out)
    assert len(table) == 4 and {r["state"] for r in table} == {"complete"}
    assert done.stdout.strip().splitlines()[-1].startswith("best trial ")


@pytest.mark.slow
def test_reproduce_command_gives_the_best_trials_result(tiny_bert, data, tmp_path):
    config = TuneConfig(
        train=str(data["train"]), dev=str(data["dev"]), model=str(tiny_bert),
        output=str(tmp_path / "repro"), epochs=1, n_trials=2, dev_fraction=None,
        space="lr=1e-3:1e-2:log,seed=0:99,batch_size=16|32", progress=False,
    )  # fmt: skip
    result = bertfit.tune(config)
    words = result.command.split()
    assert words[:2] == ["bertfit", "train"]
    assert main(words[1:] + ["--no-progress"]) == 0
    again = json.loads((tmp_path / "repro" / "reproduced" / "results.json").read_text())
    best = json.loads((result.best_dir / "results.json").read_text())
    assert again["dev"]["accuracy"] == best["dev"]["accuracy"] == result.best_score
    assert again["best_step"] == best["best_step"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--space", ""], "--space is empty"),
        (["--space", "lr=1e-2:1e-4"], "range is empty"),
        (["--space", "lr=1e-4:1e-2", "--sampler", "grid"], "--sampler grid needs a space of lists"),
        (["--space", "lr=1e-4:1e-2", "--metric", "spearman"], "--metric spearman does not fit"),
        (["--space", "output=a|b"], "is not searched over"),
        (["--storage", "sqlite:////no/such/folder/x.db"], "--storage"),
        (["--storage", "nonsense"], "--storage nonsense: cannot be opened"),
        (["--n-trials", "0"], "--n-trials must be at least 1"),
    ],
)
def test_bad_input_is_one_line_before_any_trial(tiny_bert, data, tmp_path, capsys, extra, message):
    out = tmp_path / "bad"
    assert main(tune_args(data, tiny_bert, out, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_a_study_with_other_settings_is_refused(tiny_bert, data, tmp_path, capsys):
    out = tmp_path / "study"
    out.mkdir()
    (out / "tune.json").write_text(
        json.dumps({"space": "lr=1:2", "metric": "accuracy", "train": {}})
    )
    assert main(tune_args(data, tiny_bert, out, "--space", SPACE)) == 2
    assert "holds a study with other settings" in capsys.readouterr().err


def test_help_documents_the_default_space(capsys):
    with pytest.raises(SystemExit):
        main(["tune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for part in (
        "epochs 1:4",
        "batch_size 16|32|64",
        "bert-paper",
        "--n-trials",
        "--storage",
        "such as --epochs 1, stays as given",
    ):
        assert part in text


@pytest.mark.slow
def test_trials_in_two_processes_report_from_the_first(tiny_bert, data, tmp_path):
    out = tmp_path / "nproc"
    args = tune_args(data, tiny_bert, out, "--space", "lr=1e-3|2e-3", "--nproc", "2")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "bertfit", *args, "--eval-steps", "1", "--batch-size", "16"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    import optuna

    study = optuna.load_study(study_name="bertfit", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == 2
    for trial in study.trials:  # every evaluation of the 2-process run reached the study
        assert sorted(trial.intermediate_values) == [16, 32, 48, 64]
    assert bertfit.load(out / "best").results["processes"] == 2


class StopAtFirst:
    """An evaluation hook that pickles: notes where it was called and stops the run."""

    def __init__(self, note: Path) -> None:
        self.note = note

    def __call__(self, seen) -> bool:
        self.note.write_text(f"{seen.step} {os.environ.get('RANK')}")
        return True


@pytest.mark.slow
def test_a_hook_stops_every_process_of_a_run(tiny_bert, data, tmp_path, monkeypatch):
    from bertfit.errors import BertfitError
    from bertfit.training.hooks import RunHooks
    from bertfit.training.launch import train

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    config = bertfit.TrainConfig(
        train=str(data["train"]), dev=str(data["dev"]), model=str(tiny_bert), nproc=2,
        output=str(tmp_path / "run"), epochs=2, eval_steps=1, batch_size=16, progress=False,
    )  # fmt: skip
    with pytest.raises(BertfitError):
        train(config, hooks=RunHooks(on_evaluation=StopAtFirst(tmp_path / "note")))
    assert (tmp_path / "note").read_text() == "1 0"  # the first process, at the first evaluation
    assert not (tmp_path / "run" / "results.json").exists()


@pytest.mark.slow
def test_timeout_starts_no_trial_after_it(tiny_bert, data, tmp_path):
    config = TuneConfig(
        train=str(data["train"]), dev=str(data["dev"]), model=str(tiny_bert),
        output=str(tmp_path / "timed"), epochs=1, n_trials=200, timeout=1.0,
        space="lr=1e-4:1e-2:log", progress=False,
    )  # fmt: skip
    result = bertfit.tune(config)
    assert 1 <= sum(result.states.values()) < 20


@pytest.mark.slow
def test_ctrl_c_stops_the_study_and_the_same_command_finishes_it(tiny_bert, tmp_path):
    import signal
    import time

    train = write_rows(tmp_path / "big.jsonl", marker_rows(1000, 0))
    dev = write_rows(tmp_path / "dev.jsonl", marker_rows(24, 1))
    out = tmp_path / "study"
    args = [
        sys.executable, "-m", "bertfit", "tune", "--train", str(train), "--dev", str(dev),
        "--model", str(tiny_bert), "--output", str(out), "--epochs", "2", "--no-progress",
        "--space", "lr=1e-4:1e-3:log", "--n-trials", "2", "--batch-size", "8",
        "--pruner", "none",  # this test is about stopping and resuming, not pruning
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True)
    started = out / "trials" / "0" / "bertfit.json"  # written as the first trial starts to train
    deadline = time.monotonic() + 120
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, rest
    assert "run the same command to continue the study" in rest
    assert not (out / "trials" / "0").exists()
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    table = rows(out)
    assert [r["state"] for r in table].count("complete") == 2
    interrupted = next(r for r in table if r["state"] == "fail")
    rerun = next(r for r in table if r["note"].startswith("re-run"))
    assert rerun["lr"] == interrupted["lr"]  # its slot ran again with the same parameters


def test_workers_get_a_share_of_the_cores_and_a_gpu_each():
    from bertfit.tuning.run import worker_bases

    base = bertfit.TrainConfig(output="x")
    cpu = worker_bases(base, 2, 1, gpus=0)
    assert [(b.threads, b.device) for b in cpu] == [(1, "auto"), (1, "auto")]
    gpu = worker_bases(base, 3, 4, gpus=2)
    assert [b.device for b in gpu] == ["cuda:0", "cuda:1", "cuda:0"]
    fixed = worker_bases(bertfit.TrainConfig(output="x", device="cpu"), 2, 1, gpus=2)
    assert [b.device for b in fixed] == ["cpu", "cpu"]
