"""Usage errors as a user meets them: unknown options and commands name what was probably meant,
prefixes are refused, and a checkpoint folder or a file given for a run says what to do."""

from __future__ import annotations

import json

import pytest

import bertfit
from bertfit.cli.main import main, parse_args
from tests.conftest import marker_rows, write_rows


def usage_error(argv: list[str], capsys) -> list[str]:
    """The stderr lines of a command line that argparse refuses (exit code 2)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert sum("error:" in line for line in lines) == 1, err
    return lines


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--learning-rate", "1e-4"], "--learning-rate; did you mean --lr?"),
        (["train", "--learning_rate=1e-4"], "--learning_rate=1e-4; did you mean --lr?"),
        (["train", "--num_train_epochs", "3"], "--num_train_epochs; did you mean --epochs?"),
        (["train", "--num-train-epochs", "3"], "--num-train-epochs; did you mean --epochs?"),
        (
            ["train", "--per_device_train_batch_size", "8"],
            "--per_device_train_batch_size; did you mean --batch-size?",
        ),
        (["train", "--train-batch-size", "8"], "--train-batch-size; did you mean --batch-size?"),
        (["train", "--output_dir", "o"], "--output_dir; did you mean --output?"),
        (["train", "--model_name_or_path", "m"], "--model_name_or_path; did you mean --model?"),
        (["train", "--max_seq_length", "64"], "--max_seq_length; did you mean --max-length?"),
        (
            ["train", "--gradient_accumulation_steps", "2"],
            "--gradient_accumulation_steps; did you mean --grad-accum?",
        ),
        (["train", "--warmup_ratio", "0.1"], "--warmup_ratio; did you mean --warmup-ratio?"),
        (["train", "--eval_steps", "10"], "--eval_steps; did you mean --eval-steps?"),
        (["train", "--save_steps", "10"], "--save_steps; did you mean --save-steps?"),
        (["train", "--fp16"], "--fp16; did you mean --precision fp16?"),
        (["train", "--bf16"], "--bf16; did you mean --precision bf16?"),
        (["train", "--train_file", "a.csv"], "--train_file; did you mean --train?"),
        (["train", "--validation_file", "a.csv"], "--validation_file; did you mean --dev?"),
        (["train", "--do_train"], "--do_train; not needed: 'bertfit train' trains"),
        (["train", "--version"], "--version; give it before the command: 'bertfit --version'"),
        (
            ["evaluate", "run", "--validation_file", "d.csv"],
            "--validation_file; did you mean --data?",
        ),
        (["predict", "run", "--checkpont", "3"], "--checkpont; did you mean --checkpoint?"),
        # an unknown option is named before argparse asks for the required --input and --output
        (["embed", "m", "--batch_size", "8"], "--batch_size; did you mean --batch-size?"),
    ],
)
def test_unknown_option_shows_the_command_usage_and_what_was_meant(argv, message, capsys):
    lines = usage_error(argv, capsys)
    command = argv[0]
    assert lines[0].startswith(f"usage: bertfit {command} [-h]"), lines[0]
    assert lines[-1] == f"bertfit {command}: error: unrecognized argument {message}"


@pytest.mark.parametrize(
    "prefix,meant", [("--epoch", "--epochs"), ("--out", "--output"), ("--batch", "--batch-size")]
)
def test_prefixes_are_refused(prefix, meant, capsys):
    lines = usage_error(["train", prefix, "3"], capsys)
    assert (
        lines[-1] == f"bertfit train: error: unrecognized argument {prefix}; did you mean {meant}?"
    )


def test_several_unknown_options_and_stray_words_are_one_line(capsys):
    lines = usage_error(["train", "--learning_rate", "1e-4", "--frobnicate"], capsys)
    assert lines[-1] == (
        "bertfit train: error: unrecognized arguments --learning_rate (did you mean --lr?), "
        "--frobnicate; see 'bertfit train --help'"
    )
    lines = usage_error(["predict", "run", "great", "movie"], capsys)
    assert lines[0].startswith("usage: bertfit predict [-h]")
    assert lines[-1] == (
        "bertfit predict: error: unrecognized arguments great movie "
        "(quote a value that has spaces); see 'bertfit predict --help'"
    )


@pytest.mark.parametrize(
    "argv,message",
    [
        (["trian"], "unknown command 'trian'; did you mean train?"),
        (["--debug", "predcit", "run"], "unknown command 'predcit'; did you mean predict?"),
        (["eval", "run"], "unknown command 'eval'; did you mean evaluate?"),
        (["fit", "--train", "a.csv"], "unknown command 'fit'; did you mean train?"),
        (["xyzzy"], "unknown command 'xyzzy'; choose from train, evaluate, predict, quickstart"),
    ],
)
def test_unknown_command_suggests_one(argv, message, capsys):
    lines = usage_error(argv, capsys)
    assert lines[0].startswith("usage: bertfit [-h]")
    assert lines[-1].startswith(f"bertfit: error: {message}")


@pytest.mark.parametrize(
    "argv,shown",
    [
        (["--help"], "usage: bertfit [-h]"),
        (["train", "--help"], "usage: bertfit train [-h]"),
        (["predict", "--frobnicate", "-h"], "usage: bertfit predict [-h]"),  # help wins
        (["--version"], f"bertfit {bertfit.__version__}"),
    ],
)
def test_help_and_version_still_work(argv, shown, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(shown)


def test_exact_options_and_equals_values_still_parse():
    args = parse_args(["--debug", "train", "--lr=1e-4", "--epochs", "2", "--batch-size", "-1"])
    assert (args.lr, args.epochs, args.batch_size, args.debug) == (1e-4, 2, -1, True)


@pytest.fixture(scope="module")
def checkpointed_run(tiny_bert, tmp_path_factory):
    """A finished run that kept both of its checkpoints (checkpoint-4 and checkpoint-8)."""
    root = tmp_path_factory.mktemp("checkpointed")
    train = write_rows(root / "train.csv", marker_rows(64, seed=1))
    dev = write_rows(root / "dev.csv", marker_rows(16, seed=2))
    out = root / "run"
    args = ["--epochs", "2", "--batch-size", "16", "--lr", "3e-3", "--warmup-ratio", "0.0"]
    args.append("--keep-checkpoints")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BERTFIT_CACHE", str(root / "cache"))
        code = main(
            ["train", "--train", str(train), "--dev", str(dev), "--model", str(tiny_bert)]
            + ["--output", str(out), "--save-total-limit", "2", "--no-progress", *args]
        )
    assert code == 0
    assert (out / "checkpoint-4").is_dir() and (out / "checkpoint-8").is_dir()
    return {"dir": out, "dev": dev}


@pytest.mark.slow
def test_a_checkpoint_folder_loads_like_its_run_with_checkpoint(checkpointed_run):
    run_dir = checkpointed_run["dir"]
    by_path = bertfit.load(run_dir / "checkpoint-4", device="cpu")
    by_flag = bertfit.load(run_dir, device="cpu", checkpoint="4")
    assert by_path.directory == by_flag.directory == run_dir
    assert by_path.results == by_flag.results and by_path.results["checkpoint_step"] == 4
    assert by_path.labels == ["neg", "pos"]
    texts = ["great film", "an old song"]
    assert (by_path.logits(texts) == by_flag.logits(texts)).all()


def test_predict_and_evaluate_take_a_checkpoint_folder(checkpointed_run, capsys):
    run_dir, dev = checkpointed_run["dir"], str(checkpointed_run["dev"])
    capsys.readouterr()
    assert main(["predict", str(run_dir / "checkpoint-8"), "--text", "great film"]) == 0
    assert capsys.readouterr().out.startswith("label: ")
    assert main(["evaluate", str(run_dir / "checkpoint-4"), "--data", dev, "--json"]) == 0
    by_path = json.loads(capsys.readouterr().out)
    assert main(["evaluate", str(run_dir), "--checkpoint", "4", "--data", dev, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == by_path


def test_a_checkpoint_folder_and_checkpoint_together_are_refused(checkpointed_run, capsys):
    run_dir = checkpointed_run["dir"]
    folder = run_dir / "checkpoint-4"
    capsys.readouterr()
    assert main(["predict", str(folder), "--checkpoint", "8", "--text", "x"]) == 2
    assert capsys.readouterr().err == (
        f"bertfit: error: {folder}: is a checkpoint already; drop --checkpoint, or give the run "
        f"{run_dir} with --checkpoint 8\n"
    )


def test_a_file_for_a_run_says_it_is_a_file(checkpointed_run, tmp_path, capsys):
    run_dir = checkpointed_run["dir"]
    expected = "is a file, expected a run directory (the folder that holds bertfit.json)"
    for path, hint in (
        (run_dir / "model.safetensors", f"; use {run_dir}"),
        (run_dir / "checkpoint-4" / "model.safetensors", f"; use {run_dir / 'checkpoint-4'}"),
        (write_rows(tmp_path / "notes.csv", [{"text": "a"}]), ""),
    ):
        capsys.readouterr()
        assert main(["predict", str(path), "--text", "hi"]) == 2
        assert capsys.readouterr().err == f"bertfit: error: {path}: {expected}{hint}\n"
