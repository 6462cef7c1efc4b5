"""The command line: the command table, the parser generated from the typed configs, and ``main``.

This is the only module that prints errors and sets exit codes: a ``BertfitError`` becomes one
line on stderr and exit code 2 (1 for a run that failed, 130/143 for an interrupted one); ``--debug`` (or ``BERTFIT_DEBUG=1``) keeps the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import types
import typing
from collections.abc import Callable

import bertfit.cli.commands as commands
import bertfit.config as configs
from bertfit import __version__
from bertfit.cli.suggest import command_message, is_option, unrecognized_message
from bertfit.errors import BertfitError

# The command table: name -> (config class, runner). One test checks it stays in sync.
COMMANDS: dict[str, tuple[type, Callable[[typing.Any], int]]] = {
    "train": (configs.TrainConfig, commands.run_train),
    "evaluate": (configs.EvaluateConfig, commands.run_evaluate),
    "predict": (configs.PredictConfig, commands.run_predict),
    "quickstart": (configs.QuickstartConfig, commands.run_quickstart),
    "tune": (configs.TuneConfig, commands.run_tune),
    "tasks": (configs.TasksConfig, commands.run_tasks),
    "data": (configs.DataConfig, commands.run_data),
    "embed": (configs.EmbedConfig, commands.run_embed),
    "similarity": (configs.SimilarityConfig, commands.run_similarity),
    "search": (configs.SearchConfig, commands.run_search),
    "explain": (configs.ExplainConfig, commands.run_explain),
    "report": (configs.ReportConfig, commands.run_report),
    "compare": (configs.CompareConfig, commands.run_compare),
    "export": (configs.ExportConfig, commands.run_export),
    "serve": (configs.ServeConfig, commands.run_serve),
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(annotation) -> tuple[type, tuple | None]:
    """(python type, choices) of a field annotation, looking through ``X | None``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        return type(choices[0]), choices
    return annotation, None


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One argument per dataclass field: name, type, choices, default and help come from the field."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        meta = field.metadata
        kind, choices = _base_type(hints[field.name])
        help_text = meta.get("help", "")
        if (
            field.default is not None
            and field.default is not dataclasses.MISSING
            and kind is not bool
            and "[default" not in help_text
        ):
            help_text += f" (default: {field.default})"
        many = typing.get_origin(kind) is list  # list[str]: one or more values
        if many:
            kind = typing.get_args(kind)[0]
        if meta.get("positional"):
            parser.add_argument(
                field.name,
                type=kind,
                nargs="+" if many else None,
                choices=choices,
                metavar=field.name,
                help=help_text + (f" ({', '.join(choices)})" if choices else ""),
            )
        elif kind is bool:
            parser.add_argument(
                _flag(field.name),
                dest=field.name,
                action=argparse.BooleanOptionalAction,
                default=field.default,
                help=help_text
                if field.default is None
                else help_text + f" (default: {'on' if field.default else 'off'})",
            )
        else:
            parser.add_argument(
                _flag(field.name),
                dest=field.name,
                type=kind,
                choices=choices,
                default=field.default,
                required=meta.get("required", False),
                metavar=None if choices else field.name.upper(),
                help=help_text,
            )


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand's unset --debug must not reset one given before the subcommand
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the full traceback on errors",
    )
    # allow_abbrev=False: --epoch or --out must not quietly stand for --epochs or --output
    parser = argparse.ArgumentParser(
        prog="bertfit",
        parents=[common],
        allow_abbrev=False,
        description="Fine-tune pretrained BERT-family encoders for text classification and text pairs.",
        epilog="Run 'bertfit COMMAND --help' for a command's options. Start with 'bertfit quickstart'.",
    )
    parser.add_argument("--version", action="version", version=f"bertfit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (cls, _) in COMMANDS.items():
        summary = (cls.__doc__ or "").strip().splitlines()[0]
        command = sub.add_parser(
            name, parents=[common], help=summary, description=summary, allow_abbrev=False
        )
        add_config_arguments(command, cls)
    return parser


def config_from_args(cls: type, args: argparse.Namespace):
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def command_parser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The subparser of command ``name``."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _command_index(parser: argparse.ArgumentParser, argv: list[str]) -> int | None:
    """Where the command word is (top-level options take no value, so it is the first word that
    is not an option); exit 2 with a suggestion when it is not one of ours."""
    for i, token in enumerate(argv):
        if token in ("-h", "--help", "--version", "--"):
            return None
        if not token.startswith("-"):
            if token not in COMMANDS:
                parser.error(command_message(token, list(COMMANDS)))
            return i
    return None


def _unknown_options(command: argparse.ArgumentParser, words: list[str]) -> list[str]:
    """The options in a command's words that it does not have, as argparse would see them."""
    known = {s for a in command._actions for s in a.option_strings}
    unknown = []
    for word in words:
        if word in ("-h", "--help"):  # the help, as asked, not an error
            return []
        if word == "--":
            break
        if is_option(word) and " " not in word and word.split("=", 1)[0] not in known:
            unknown.append(word)
    return unknown


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed command line. A usage error prints the command's own usage and one line that
    names what was wrong and what was probably meant, then exits with code 2."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    at = _command_index(parser, argv)
    # unknown options first: before argparse complains that a required argument is missing
    unknown = [] if at is None else _unknown_options(command_parser(parser, argv[at]), argv[at:])
    args, extras = (None, unknown) if unknown else parser.parse_known_args(argv)
    if extras:
        command = command_parser(parser, argv[at] if args is None else args.command)
        options = [s for a in command._actions for s in a.option_strings if s.startswith("--")]
        command.error(unrecognized_message(extras, options, command.prog))
    return args


def _log_level() -> int:
    """Under torchrun the first process reports; the others say only warnings and errors."""
    if not any(name in os.environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
        return logging.INFO  # one process: skip importing the distributed layer (and torch)
    from bertfit.training.distributed import World

    try:
        return logging.INFO if World.from_env().is_main else logging.WARNING
    except BertfitError:  # a damaged torchrun environment is reported by the command itself
        return logging.INFO


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    debug = getattr(args, "debug", False) or os.environ.get("BERTFIT_DEBUG", "") not in ("", "0")
    level = _log_level()
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    cls, runner = COMMANDS[args.command]
    try:
        return runner(config_from_args(cls, args))
    except BertfitError as err:
        if debug:
            raise
        if str(err):  # empty: the training processes have said it already
            sys.stderr.write(f"bertfit: error: {err}\n")
        return err.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("bertfit: interrupted\n")
        return 130
    except Exception as err:  # an unexpected failure: one line, the trace only with --debug
        if debug:
            raise
        sys.stderr.write(
            f"bertfit: internal error: {type(err).__name__}: {err} (run with --debug for the traceback)\n"
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
