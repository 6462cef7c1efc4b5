"""Config building blocks: a field with its help text, the fields many commands share, and the
collect-then-raise way every config reports its problems.

Each field carries its help text in ``metadata["help"]``; ``metadata["positional"]`` makes it a
positional CLI argument, ``metadata["required"]`` a required option.
"""

from __future__ import annotations

import sys
from dataclasses import field, fields
from typing import Any

from bertfit.errors import ConfigError

DEFAULT_MODEL = "default"
TRUNCATIONS = ("longest-first", "proportional", "head-tail")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DEVICE_HELP = "auto, cpu, cuda or cuda:N"


def flag(name: str) -> str:
    """The command-line flag of a config field: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def option(default: Any, help: str, **meta: Any) -> Any:
    """A config field: its default and the help text the CLI shows."""
    return field(default=default, metadata={"help": help, **meta})


def device_field() -> Any:
    return option("auto", DEVICE_HELP)


def backend_field() -> Any:
    return option(
        "torch",
        "torch, or onnx: the model 'bertfit export --format onnx' wrote, run by onnxruntime",
    )


def batch_size_field(default: int = 64, what: str = "examples per forward pass") -> Any:
    return option(default, what)


def data_dir_field(
    help: str = "folder searched first for the task's files [default: $BERTFIT_DATA_DIR]",
) -> Any:
    return option(None, help)


def cache_dir_field(
    help: str = "downloaded corpora [default: $BERTFIT_CACHE or ~/.cache/bertfit]",
) -> Any:
    return option(None, help)


def download_field() -> Any:
    return option(True, "download a task's corpus when no local copy is found")


def progress_field() -> Any:
    return option(None, "show progress bars on stderr [default: when stderr is a terminal]")


def show_progress(setting: bool | None) -> bool:
    """--progress/--no-progress, else on when someone watches (stderr is a terminal)."""
    if setting is not None:
        return setting
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def checkpoint_field() -> Any:
    """``--checkpoint`` of the commands that load a trained run."""
    return option(
        None,
        "use a checkpoint of the run instead of its final model: best, last or a step (works on an unfinished run)",
    )


def changed_fields(cfg: Any) -> list[str]:
    """The names of a config's fields set away from their defaults, in declaration order."""
    return [f.name for f in fields(cfg) if getattr(cfg, f.name) != f.default]


def common_problems(cfg: Any) -> list[str]:
    """The checks of fields that several configs share."""
    problems = []
    batch_size = getattr(cfg, "batch_size", None)
    if batch_size is not None and batch_size < 1:
        problems.append(f"--batch-size must be at least 1, got {batch_size}")
    for name in ("text", "pair", "query"):  # texts typed on the command line
        value = getattr(cfg, name, None)
        if isinstance(value, str) and not value.strip():
            problems.append(f"--{name} is empty; every input needs some text (as in training)")
    max_length = getattr(cfg, "max_length", None)
    if max_length is not None and max_length < 8:
        problems.append(f"--max-length must be at least 8, got {max_length}")
    return problems


def raise_if(problems: list[str]) -> None:
    """One ConfigError listing every problem, so a user fixes them all in one go."""
    if problems:
        raise ConfigError("; ".join(problems))


def config_fields(cls: type) -> list:
    """The dataclass fields of a config, in declaration order."""
    return list(fields(cls))


def header_field() -> Any:
    """``--header/--no-header`` of the commands that read CSV/TSV files."""
    return option(
        True,
        "CSV/TSV: the first row names the columns (given only column numbers, when it looks like names); --no-header reads every row as data, columns by number (0-based)",
    )


def skip_bad_rows_field() -> Any:
    """``--skip-bad-rows`` of every command that reads a file of texts."""
    return option(False, "drop rows with an empty text (or a missing label) instead of stopping")


def delimiter_field() -> Any:
    return option(
        None,
        "CSV/TSV field separator, one character: ';', '|', '\\t' for a tab (a .txt file read with one is read as columns) [default: by extension: ',' for .csv, tab for .tsv]",
    )


def quoting_field() -> Any:
    return option(
        None,
        'CSV/TSV fields in double quotes: csv reads them as quoted ("" inside is a quote, as pandas and Excel write them), none keeps the quotes as text (GLUE\'s way) [default: csv for .csv, none for .tsv]',
    )
