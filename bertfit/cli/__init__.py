"""The command line: ``bertfit COMMAND ...`` (see ``cli/main.py`` for the command table)."""

from bertfit.cli.main import main

__all__ = ["main"]
