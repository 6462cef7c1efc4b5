"""Every hint names an option the command accepts (issue 13, item 6)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from bertfit.cli.main import COMMANDS, build_parser, main
from tests.conftest import write_rows

PACKAGE = Path(__file__).resolve().parents[1] / "bertfit"
# "pass --x", "add --x", "give --x", "with --x", "use --x", "or --x": advice to type a flag
HINT = re.compile(r"\b(?:pass|add|give|with|use|or|try|drop)\s+(--[a-z][a-z0-9-]*)")


def command_options() -> dict[str, set[str]]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    options = {}
    for name, command in sub.choices.items():
        flags = {s for a in command._actions for s in a.option_strings}
        options[name] = flags | {f.replace("--", "--no-", 1) for f in flags}
    return options


def hinted_flags() -> dict[str, set[str]]:
    """flag -> the modules whose messages advise it."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for flag in HINT.findall(node.value):
                    found.setdefault(flag, set()).add(path.name)
    return found


def test_every_advised_flag_exists_in_some_command():
    known = set().union(*command_options().values())
    missing = {flag: sorted(where) for flag, where in hinted_flags().items() if flag not in known}
    assert not missing, missing


@pytest.mark.parametrize("command", ["predict", "evaluate", "explain", "embed", "search"])
def test_commands_that_read_files_accept_skip_bad_rows(command):
    """The readers' "fix it or pass --skip-bad-rows" holds for every command that reads rows."""
    assert "--skip-bad-rows" in command_options()[command]
    assert command in COMMANDS


@pytest.mark.slow
def test_predict_takes_the_advice_it_gives(tiny_bert, tmp_path, capsys):
    rows = [
        {"text": f"a {w} film", "label": "pos" if i % 2 else "neg"}
        for i, w in enumerate("abcdefghij" * 4)
    ]
    train = write_rows(tmp_path / "t.csv", rows)
    out = tmp_path / "run"
    fast = ["--epochs", "1", "--batch-size", "8", "--max-length", "32", "--no-progress"]
    assert (
        main(
            ["train", "--train", str(train), "--model", str(tiny_bert), "--output", str(out), *fast]
        )
        == 0
    )
    inputs = write_rows(tmp_path / "in.csv", [{"text": "a great film"}, {"text": " "}])
    argv = ["predict", str(out), "--input", str(inputs)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "pass --skip-bad-rows" in err
    assert main([*argv, "--skip-bad-rows"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 1
