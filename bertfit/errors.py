"""Typed errors. Library code raises these; only ``cli.py`` turns them into a message and exit code."""

from __future__ import annotations


class BertfitError(Exception):
    """Base class for every error bertfit reports to a user as one line."""


class ConfigError(BertfitError):
    """An invalid option or combination of options."""


class DataError(BertfitError):
    """A data file that cannot be read: path, format, column, row."""


class ModelError(BertfitError):
    """An encoder or run directory that cannot be loaded."""
