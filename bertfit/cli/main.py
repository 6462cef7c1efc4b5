"""The command line, generated from the typed configs in ``config.py``.

This is the only module that prints errors and sets exit codes: a ``BertfitError`` becomes one
line on stderr and exit code 2 (1 for a run that failed, 130/143 for an interrupted one); ``--debug`` (or ``BERTFIT_DEBUG=1``) keeps the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import types
import typing
from collections.abc import Callable

from bertfit import __version__
from bertfit.config.commands import (
    CompareConfig,
    DataConfig,
    EmbedConfig,
    EvaluateConfig,
    ExplainConfig,
    PredictConfig,
    QuickstartConfig,
    ReportConfig,
    SearchConfig,
    SimilarityConfig,
    TasksConfig,
    TrainConfig,
)
from bertfit.errors import BertfitError


def _run_train(config: TrainConfig) -> int:
    from bertfit.training.run import train

    train(config)
    return 0


def _run_evaluate(config: EvaluateConfig) -> int:
    from bertfit.evaluation.metrics import format_report
    from bertfit.serve.commands import evaluate

    metrics = evaluate(config)
    sys.stdout.write((json.dumps(metrics) if config.json else format_report(metrics)) + "\n")
    return 0


def _run_predict(config: PredictConfig) -> int:
    from bertfit.serve.commands import predict

    records = predict(config)
    if config.text is not None:
        record = records[0]
        if "score" in record:
            sys.stdout.write(f"score: {record['score']:.4f}\n")
            return 0
        probs = ", ".join(f"{label} {p:.4f}" for label, p in record["probabilities"].items())
        if "labels" in record:
            sys.stdout.write(f"labels: {', '.join(map(str, record['labels'])) or '(none)'}\n")
        else:
            sys.stdout.write(f"label: {record['label']}\n")
        sys.stdout.write(f"probabilities: {probs}\n")
    elif config.output is None:
        sys.stdout.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    else:
        sys.stderr.write(f"wrote {len(records)} predictions to {config.output}\n")
    return 0


def _run_quickstart(config: QuickstartConfig) -> int:
    from bertfit.evaluation.metrics import format_report
    from bertfit.serve.commands import quickstart

    summary = quickstart(config)
    out = [
        f"\nfine-tuned model: {summary['run_dir']}",
        "dev set of the sample (SST-2 dev, 872 sentences):",
        format_report(summary["metrics"]),
        "",
        "predictions:",
    ]
    for sentence, record in summary["predictions"]:
        label = "positive" if str(record["label"]) == "1" else "negative"
        out.append(
            f"  {label:<8} ({record['probabilities'][str(record['label'])]:.3f})  {sentence}"
        )
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def _run_tasks(config: TasksConfig) -> int:
    from bertfit.data.tasks import describe_tasks

    records = describe_tasks(config.data_dir, config.cache_dir)
    if config.json:
        sys.stdout.write(json.dumps(records, indent=2) + "\n")
        return 0
    lines = []
    for r in records:
        rows = ", ".join(f"{split} {n:,}" for split, n in r["rows"].items())
        kind = r["problem"] if r["labels"] is None else f"labels: {', '.join(r['labels'])}"
        lines += [
            f"{r['task']:<7} {r['title']}",
            f"        {kind}; metrics: {', '.join(r['metrics'])}; rows: {rows}",
            f"        download {r['download_bytes'] / 1e6:.1f} MB; licence: {r['licence']}",
            f"        {'found: ' + r['found'] if r['found'] else 'not here yet; looked in ' + ', '.join(r['looked_for'])}",
        ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _run_data(config: DataConfig) -> int:
    from bertfit.data.tasks import get_task, locate

    task = get_task(config.task)
    folder = locate(
        task,
        config.data_dir,
        config.cache_dir,
        download=config.action == "download",
        progress=config.progress,
    )
    sys.stdout.write(f"{folder}\n")
    return 0


def _run_embed(config: EmbedConfig) -> int:
    from bertfit.serve.commands import embed

    vectors = embed(config)
    sys.stderr.write(
        f"wrote {vectors.shape[0]} vectors of {vectors.shape[1]} dimensions to {config.output}\n"
    )
    return 0


def _run_similarity(config: SimilarityConfig) -> int:
    from bertfit.serve.commands import similarity

    sys.stdout.write(f"cosine similarity: {similarity(config):.4f}\n")
    return 0


def _run_search(config: SearchConfig) -> int:
    from bertfit.serve.commands import search

    records = search(config)
    if config.output:
        sys.stderr.write(f"wrote hits for {len(records)} queries to {config.output}\n")
        return 0
    for record in records:
        sys.stdout.write(f"query: {record['query']}\n")
        for hit in record["hits"]:
            sys.stdout.write(f"  {hit['rank']:>3}. {hit['score']:.4f}  {hit['text']}\n")
    return 0


def _run_explain(config: ExplainConfig) -> int:
    from pathlib import Path

    from bertfit.files import write_text
    from bertfit.serve.explain import render_html, render_png
    from bertfit.serve.run import load

    config.validate()
    run = load(config.run_dir, config.device, config.checkpoint)
    if config.input is not None:
        from bertfit.data.readers import read_examples
        from bertfit.serve.commands import trained_columns

        columns = trained_columns(run, None, None, None)
        examples = read_examples(config.input, columns, with_labels=False)
        folder = Path(config.output) if config.output else None
        links = []
        for i, text in enumerate(examples.texts):
            pair = None if examples.pairs is None else examples.pairs[i]
            result = run.explain(text, pair, config.steps)
            if config.json:
                sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
            if folder is not None:
                name = f"{i + 1:05d}"
                write_text(folder / f"{name}.html", render_html(result))
                render_png(result, folder / f"{name}.png")
                links.append((name, result["label"], text))
        if folder is not None:
            from html import escape

            items = "".join(
                f'<li><a href="{n}.html">{escape(str(label))}</a>: {escape(t)}</li>'
                for n, label, t in links
            )
            write_text(
                folder / "index.html",
                f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>bertfit '
                f"explanations</title></head><body><h1>{len(links)} explanations</h1><ol>{items}</ol></body></html>\n",
            )
            sys.stderr.write(f"wrote {len(links)} explanations to {folder}\n")
        return 0
    result = run.explain(config.text, config.pair, config.steps)
    if config.output:
        page = Path(config.output)
        write_text(page, render_html(result))
        render_png(result, page.with_suffix(".png"))
        sys.stderr.write(f"wrote {page} and {page.with_suffix('.png')}\n")
    if config.json:
        sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
        return 0
    probs = ", ".join(f"{label} {p:.4f}" for label, p in result["probabilities"].items())
    lines = [
        f"label: {result['label']}",
        f"probabilities: {probs}",
        "",
        "word            attention  integrated gradients",
    ]
    for word in result["words"]:
        lines.append(
            f"{word['word']:<15} {word['attention']:9.3f}  {word['integrated_gradients']:+.3f}"
        )
    lines.append(
        f"\nintegrated gradients sum to {result['attribution_sum']:+.4f}; the output moved "
        f"{result['output_difference']:+.4f} from the all-[PAD] baseline"
    )
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _run_report(config: ReportConfig) -> int:
    from pathlib import Path

    from bertfit.errors import ModelError
    from bertfit.report.page import build_report

    if not (Path(config.run_dir) / "bertfit.json").is_file():
        raise ModelError(f"{config.run_dir}: not a bertfit run directory (no bertfit.json)")
    sys.stdout.write(f"{build_report(config.run_dir)}\n")
    return 0


def _run_compare(config: CompareConfig) -> int:
    from bertfit.report.page import compare_runs

    out = compare_runs(config)
    if config.json:
        sys.stdout.write(json.dumps(out) + "\n")
        return 0
    for test in out.get("paired", []):
        sys.stdout.write(
            f"{test['a']} minus {test['b']}: {test['metric']} {test['difference']:+.4f} "
            f"(95% CI {test['ci'][0]:+.4f} to {test['ci'][1]:+.4f}), p = {test['p_value']:.4f}, n = {test['n']}\n"
        )
    sys.stdout.write(f"wrote {out['page']}\n")
    return 0


# The command table: name -> (config class, runner). One test checks it stays in sync.
COMMANDS: dict[str, tuple[type, Callable[[typing.Any], int]]] = {
    "train": (TrainConfig, _run_train),
    "evaluate": (EvaluateConfig, _run_evaluate),
    "predict": (PredictConfig, _run_predict),
    "quickstart": (QuickstartConfig, _run_quickstart),
    "tasks": (TasksConfig, _run_tasks),
    "data": (DataConfig, _run_data),
    "embed": (EmbedConfig, _run_embed),
    "similarity": (SimilarityConfig, _run_similarity),
    "search": (SearchConfig, _run_search),
    "explain": (ExplainConfig, _run_explain),
    "report": (ReportConfig, _run_report),
    "compare": (CompareConfig, _run_compare),
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
    parser = argparse.ArgumentParser(
        prog="bertfit",
        parents=[common],
        description="Fine-tune pretrained BERT-family encoders for text classification and text pairs.",
        epilog="Run 'bertfit COMMAND --help' for a command's options. Start with 'bertfit quickstart'.",
    )
    parser.add_argument("--version", action="version", version=f"bertfit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (cls, _) in COMMANDS.items():
        summary = (cls.__doc__ or "").strip().splitlines()[0]
        command = sub.add_parser(name, parents=[common], help=summary, description=summary)
        add_config_arguments(command, cls)
    return parser


def config_from_args(cls: type, args: argparse.Namespace):
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False) or os.environ.get("BERTFIT_DEBUG", "") not in ("", "0")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    cls, runner = COMMANDS[args.command]
    try:
        return runner(config_from_args(cls, args))
    except BertfitError as err:
        if debug:
            raise
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
