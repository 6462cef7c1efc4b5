"""Typed errors. Library code raises these; only ``cli.py`` turns them into a message and exit code."""

from __future__ import annotations


class BertfitError(Exception):
    """Base class for every error bertfit reports to a user as one line."""

    exit_code = 2  # a usage problem: a bad file, flag or model folder


class ConfigError(BertfitError):
    """An invalid option or combination of options."""


class DataError(BertfitError):
    """A data file that cannot be read: path, format, column, row."""


class ModelError(BertfitError):
    """An encoder or run directory that cannot be loaded."""


class TrainingError(BertfitError):
    """A run that cannot go on (non-finite loss, out of memory, full disk); its checkpoints stay valid."""

    exit_code = 1


class OutOfMemory(TrainingError):
    """The device ran out of memory; the message says what to change."""


class Interrupted(BertfitError):
    """Ctrl-C or SIGTERM: a checkpoint was saved and the run can be resumed."""

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Stopped(BertfitError):
    """A caller's evaluation hook stopped the run (``bertfit tune`` pruning a trial)."""

    exit_code = 1
