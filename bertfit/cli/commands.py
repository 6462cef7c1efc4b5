"""What each command runs: call the Python API with the typed config, print the result for people
(or as JSON), and return the exit code."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import bertfit.config as configs
from bertfit.cli.render import (
    comparison_text,
    explanation_text,
    metrics_table,
    prediction_text,
    quickstart_text,
    search_text,
    tasks_text,
)
from bertfit.config.fields import show_progress
from bertfit.errors import ModelError
from bertfit.rundir import RUN_CONFIG, is_run_dir


def run_train(config: configs.TrainConfig) -> int:
    from bertfit.training.launch import train

    train(config)
    return 0


def run_tune(config: configs.TuneConfig) -> int:
    from bertfit.tuning.run import tune

    result = tune(config)
    sys.stdout.write(result.summary_line() + "\n")
    return 0


def run_evaluate(config: configs.EvaluateConfig) -> int:
    from bertfit.evaluation.score import evaluate

    metrics = evaluate(config)
    sys.stdout.write((json.dumps(metrics) if config.json else metrics_table(metrics)) + "\n")
    return 0


def run_predict(config: configs.PredictConfig) -> int:
    from bertfit.inference.predict import predict

    records = predict(config)
    if config.text is not None:
        sys.stdout.write(prediction_text(records[0]))
    elif config.output is None:
        sys.stdout.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    else:
        sys.stderr.write(f"wrote {len(records)} predictions to {config.output}\n")
    return 0


def run_quickstart(config: configs.QuickstartConfig) -> int:
    from bertfit.training.quickstart import quickstart

    sys.stdout.write(quickstart_text(quickstart(config)))
    return 0


def run_tasks(config: configs.TasksConfig) -> int:
    from bertfit.data.corpus import describe_tasks

    records = describe_tasks(config.data_dir, config.cache_dir)
    sys.stdout.write(json.dumps(records, indent=2) + "\n" if config.json else tasks_text(records))
    return 0


def run_data(config: configs.DataConfig) -> int:
    from bertfit.data.corpus import locate
    from bertfit.data.tasks import get_task

    download = config.action == "download"
    folder = locate(
        get_task(config.task),
        config.data_dir,
        config.cache_dir,
        download,
        show_progress(config.progress),
    )
    sys.stdout.write(f"{folder}\n")
    return 0


def run_embed(config: configs.EmbedConfig) -> int:
    from bertfit.inference.vectors import embed

    vectors = embed(config)
    sys.stderr.write(
        f"wrote {vectors.shape[0]} vectors of {vectors.shape[1]} dimensions to {config.output}\n"
    )
    return 0


def run_similarity(config: configs.SimilarityConfig) -> int:
    from bertfit.inference.vectors import similarity

    sys.stdout.write(f"cosine similarity: {similarity(config):.4f}\n")
    return 0


def run_search(config: configs.SearchConfig) -> int:
    from bertfit.inference.vectors import search

    records = search(config)
    if config.output:
        sys.stderr.write(f"wrote hits for {len(records)} queries to {config.output}\n")
    else:
        sys.stdout.write(search_text(records))
    return 0


def run_explain(config: configs.ExplainConfig) -> int:
    from bertfit.data.layout import file_options
    from bertfit.inference.explain import explain_file
    from bertfit.inference.run import load
    from bertfit.report.explain_page import write_explanation_page, write_explanation_pages

    config.validate()
    run = load(config.run_dir, config.device, config.checkpoint)
    if config.input is not None:
        explained = []
        progress = show_progress(config.progress)
        options = file_options(config)
        for result, text in explain_file(run, config.input, config.steps, progress, **options):
            if config.json:
                sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
            explained.append((result, text))
        if config.output:
            write_explanation_pages(Path(config.output), explained)
            sys.stderr.write(f"wrote {len(explained)} explanations to {config.output}\n")
        return 0
    result = run.explain(config.text, config.pair, config.steps)
    if config.output:
        png = write_explanation_page(Path(config.output), result)
        sys.stderr.write(f"wrote {config.output} and {png}\n")
    if config.json:
        sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(explanation_text(result))
    return 0


def run_report(config: configs.ReportConfig) -> int:
    from bertfit.report.page import build_report

    if not is_run_dir(config.run_dir):
        raise ModelError(f"{config.run_dir}: not a bertfit run directory (no {RUN_CONFIG})")
    sys.stdout.write(f"{build_report(config.run_dir)}\n")
    return 0


def run_compare(config: configs.CompareConfig) -> int:
    from bertfit.evaluation.compare import compare_runs

    out = compare_runs(config)
    sys.stdout.write(json.dumps(out) + "\n" if config.json else comparison_text(out))
    return 0


def run_export(config: configs.ExportConfig) -> int:
    if config.format == "onnx":
        return _run_onnx_export(config)
    from bertfit.export.hf import export_run

    names = export_run(config)
    loader = (
        "SentenceTransformer"
        if "modules.json" in names
        else "transformers.AutoModelForSequenceClassification.from_pretrained"
    )
    sys.stderr.write(
        f"wrote {config.output}: {', '.join(names)}; {loader}('{config.output}') loads it\n"
    )
    return 0


def _run_onnx_export(config: configs.ExportConfig) -> int:
    from bertfit.export.onnx import LIMIT, export_onnx
    from bertfit.inference.onnx import ONNX_DIR

    record = export_onnx(config)
    what = "logit" if record["kind"] == "classifier" else "vector"
    limit = f"{LIMIT:.0e}".replace("e-0", "e-")  # 1e-3
    lines = [
        f"wrote {record['output']}: {', '.join(record['files'])}",
        f"largest |onnx - torch| {what} difference: {record['max_abs_diff']:.1e} (limit {limit})",
    ]
    if "quantized" in record:
        lines.append(
            f"int8: largest |onnx - torch| {what} difference: "
            f"{record['quantized']['max_abs_diff']:.1e}"
        )
    if "metric" in record:
        metric = record["metric"]
        lines.append(f"{metric['name']} fp32 {metric['fp32']:.4f} -> int8 {metric['int8']:.4f}")
    if Path(record["output"]).resolve() == (Path(config.run_dir) / ONNX_DIR).resolve():
        command = "predict" if record["kind"] == "classifier" else "embed"
        lines.append(f"--backend onnx uses it: bertfit {command} {config.run_dir} --backend onnx")
    sys.stderr.writelines(line + "\n" for line in lines)
    return 0


def run_serve(config: configs.ServeConfig) -> int:
    from bertfit.serve.server import serve

    serve(config)
    return 0
