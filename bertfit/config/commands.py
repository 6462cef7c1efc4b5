"""The configs of the commands that use a trained run or an encoder, and of the helpers.

``validate()`` collects every problem and reports them together (see ``config/fields.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bertfit.config.fields import (
    backend_field,
    batch_size_field,
    cache_dir_field,
    checkpoint_field,
    common_problems,
    data_dir_field,
    delimiter_field,
    device_field,
    download_field,
    header_field,
    option,
    progress_field,
    quoting_field,
    raise_if,
    skip_bad_rows_field,
)
from bertfit.data.layout import reading_problems


@dataclass
class EvaluateConfig:
    """Score a trained run on a labelled file: accuracy, macro-F1, per-class P/R/F1, confusion."""

    run_dir: str = option(
        None,
        "run directory written by 'bertfit train', or with --objective cosine any encoder (default, a folder, a hub name)",
        positional=True,
    )
    checkpoint: str | None = checkpoint_field()
    data: str | None = option(None, "labelled file to score (or use --task)")
    objective: Literal["cosine"] | None = option(
        None,
        "score a bi-encoder: Pearson/Spearman of the cosine of the two texts' embeddings against the gold score",
    )
    task: str | None = option(None, "score on a named corpus's split instead (see 'bertfit tasks')")
    split: str | None = option(None, "the task's split [default: its dev split]")
    data_dir: str | None = data_dir_field()
    cache_dir: str | None = cache_dir_field()
    download: bool = download_field()
    text_column: str | None = option(None, "text column [default: as trained]")
    pair_column: str | None = option(None, "pair column [default: as trained]")
    label_column: str | None = option(None, "label column [default: as trained]")
    header: bool = header_field()
    skip_bad_rows: bool = skip_bad_rows_field()
    delimiter: str | None = delimiter_field()
    quoting: Literal["csv", "none"] | None = quoting_field()
    batch_size: int = batch_size_field()
    json: bool = option(False, "print one JSON object instead of a table")
    device: str = device_field()
    backend: Literal["torch", "onnx"] = backend_field()
    progress: bool | None = progress_field()

    def validate(self, in_memory: bool = False) -> EvaluateConfig:
        """``in_memory``: the labelled rows are given to ``evaluate`` instead of ``--data``."""
        problems = common_problems(self) + reading_problems(self)
        if (self.data is None and not in_memory) == (self.task is None):
            problems.append("give exactly one of --data FILE or --task NAME")
        if in_memory and self.data is not None:
            problems.append(
                f"data: rows in memory and the file {self.data!r} were both given; give one"
            )
        if self.split is not None and self.task is None:
            problems.append("--split goes with --task")
        raise_if(problems)
        return self


@dataclass
class CompareConfig:
    """Compare runs on one page: curves and metrics side by side, and a paired bootstrap test."""

    runs: list[str] = option(None, "two or more run directories", positional=True)
    data: str | None = option(
        None, "labelled file to score every run on, for the paired test (or use --task)"
    )
    task: str | None = option(None, "a named corpus's split to score every run on")
    split: str | None = option(None, "the task's split [default: its dev split]")
    data_dir: str | None = data_dir_field("folder searched first for the task's files")
    header: bool = header_field()
    skip_bad_rows: bool = skip_bad_rows_field()
    delimiter: str | None = delimiter_field()
    quoting: Literal["csv", "none"] | None = quoting_field()
    output: str | None = option(
        None, "the page to write (PNGs go beside it) [default: compare.html in the first run]"
    )
    json: bool = option(False, "print the comparison as JSON")
    device: str = device_field()

    def validate(self) -> CompareConfig:
        problems = reading_problems(self)
        if not self.runs or len(self.runs) < 2:
            problems.append("give at least two run directories")
        if self.data is not None and self.task is not None:
            problems.append("give --data or --task, not both")
        if self.output is not None and not self.output.lower().endswith((".html", ".htm")):
            problems.append(f"--output must end in .html, got {self.output!r}")
        raise_if(problems)
        return self

    def page(self) -> str:
        """Where the page goes: --output, else compare.html in the first run's folder."""
        return self.output or str(Path(self.runs[0]) / "compare.html")


@dataclass
class ReportConfig:
    """Rebuild a run's report.html (curves, confusion matrix, calibration, worst mistakes)."""

    run_dir: str = option(None, "run directory written by 'bertfit train'", positional=True)

    def validate(self) -> ReportConfig:
        return self


@dataclass
class ExplainConfig:
    """Why a classifier decided: word scores by [CLS] attention and by integrated gradients."""

    run_dir: str = option(None, "run directory written by 'bertfit train'", positional=True)
    checkpoint: str | None = checkpoint_field()
    text: str | None = option(None, "the text to explain")
    pair: str | None = option(None, "the second text, for a pair task")
    input: str | None = option(
        None,
        "explain every row of this file instead (.csv/.tsv/.jsonl, or .txt: one text per line); --output is then a folder",
    )
    header: bool = header_field()
    skip_bad_rows: bool = skip_bad_rows_field()
    delimiter: str | None = delimiter_field()
    quoting: Literal["csv", "none"] | None = quoting_field()
    steps: int = option(50, "integrated-gradients steps (more: closer to exact, slower)")
    output: str | None = option(
        None,
        "write a self-contained HTML page here (and a PNG beside it, same name, .png); with --input, a folder for one page per row and index.html",
    )
    json: bool = option(False, "print the tokens, words and scores as one JSON object")
    device: str = device_field()
    progress: bool | None = progress_field()

    def validate(self) -> ExplainConfig:
        problems = common_problems(self) + reading_problems(self)
        if self.steps < 2:
            problems.append(f"--steps must be at least 2, got {self.steps}")
        if (self.text is None) == (self.input is None):
            problems.append("give exactly one of --text or --input")
        if self.input is not None and self.output is None and not self.json:
            problems.append("--input needs --output DIR (or --json)")
        if self.pair is not None and self.text is None:
            problems.append("--pair goes with --text")
        single = self.text is not None and self.output is not None
        if single and not self.output.lower().endswith((".html", ".htm")):
            problems.append(f"--output must end in .html, got {self.output!r}")
        raise_if(problems)
        return self


@dataclass
class EmbedConfig:
    """Embed every text of a file with a bi-encoder run or any encoder; write .npy or .parquet."""

    model: str = option(
        None,
        "bi-encoder run directory, or an encoder: default, a folder, a hub name",
        positional=True,
    )
    input: str = option(
        None, "texts: .txt (one per line), or .csv/.tsv/.jsonl with --text-column", required=True
    )
    output: str = option(
        None, "where the vectors go: .npy (float32, one row per text) or .parquet", required=True
    )
    text_column: str = option("text", "column of the texts in a .csv/.tsv/.jsonl input")
    header: bool = header_field()
    skip_bad_rows: bool = skip_bad_rows_field()
    delimiter: str | None = delimiter_field()
    quoting: Literal["csv", "none"] | None = quoting_field()
    normalize: bool | None = option(
        None, "L2-normalise the vectors [default: as the model declares]"
    )
    batch_size: int = batch_size_field(64, "texts per forward pass")
    max_length: int | None = option(None, "tokens per text [default: the model's, e.g. 256]")
    device: str = device_field()
    backend: Literal["torch", "onnx"] = backend_field()
    progress: bool | None = progress_field()

    def validate(self) -> EmbedConfig:
        raise_if(common_problems(self) + reading_problems(self))
        return self


@dataclass
class SimilarityConfig:
    """Cosine similarity of two texts' embeddings (a bi-encoder run or any encoder)."""

    model: str = option(
        None,
        "bi-encoder run directory, or an encoder: default, a folder, a hub name",
        positional=True,
    )
    text: str = option(None, "the first text", required=True)
    pair: str = option(None, "the second text", required=True)
    max_length: int | None = option(None, "tokens per text [default: the model's]")
    batch_size: int = batch_size_field(64, "texts per forward pass")
    device: str = device_field()
    backend: Literal["torch", "onnx"] = backend_field()

    def validate(self) -> SimilarityConfig:
        raise_if(common_problems(self))
        return self


@dataclass
class SearchConfig:
    """Exact cosine search: the texts of a corpus nearest to each query."""

    model: str = option(
        None,
        "bi-encoder run directory, or an encoder: default, a folder, a hub name",
        positional=True,
    )
    corpus: str = option(
        None, "texts to search: .txt (one per line) or .csv/.tsv/.jsonl", required=True
    )
    query: str | None = option(None, "one query")
    queries: str | None = option(None, "a file of queries, like --corpus")
    top_k: int = option(5, "hits per query")
    output: str | None = option(None, "write hits as JSONL here [default: print them]")
    text_column: str = option("text", "column of the texts in .csv/.tsv/.jsonl files")
    header: bool = header_field()
    skip_bad_rows: bool = skip_bad_rows_field()
    delimiter: str | None = delimiter_field()
    quoting: Literal["csv", "none"] | None = quoting_field()
    batch_size: int = batch_size_field(64, "texts per forward pass")
    max_length: int | None = option(None, "tokens per text [default: the model's]")
    cache: bool = option(
        True, "keep the corpus embeddings next to the corpus file for the next search"
    )
    device: str = device_field()
    backend: Literal["torch", "onnx"] = backend_field()
    progress: bool | None = progress_field()

    def validate(self) -> SearchConfig:
        problems = common_problems(self) + reading_problems(self)
        if (self.query is None) == (self.queries is None):
            problems.append("give exactly one of --query or --queries")
        if self.top_k < 1:
            problems.append(f"--top-k must be at least 1, got {self.top_k}")
        raise_if(problems)
        return self


@dataclass
class PredictConfig:
    """Predict labels with a trained run: one text from the command line, or a whole file."""

    run_dir: str = option(None, "run directory written by 'bertfit train'", positional=True)
    checkpoint: str | None = checkpoint_field()
    text: str | None = option(None, "one text to classify")
    pair: str | None = option(None, "the second text, for a pair task, with --text")
    input: str | None = option(
        None, "file of inputs (.csv/.tsv/.jsonl, .gz too, or .txt: one text per line)"
    )
    output: str | None = option(
        None,
        "where batch predictions go; format by extension (.jsonl/.csv/.tsv) [default: JSONL on stdout]",
    )
    text_column: str | None = option(None, "text column of --input [default: as trained]")
    pair_column: str | None = option(None, "pair column of --input [default: as trained]")
    header: bool = header_field()
    skip_bad_rows: bool = skip_bad_rows_field()
    delimiter: str | None = delimiter_field()
    quoting: Literal["csv", "none"] | None = quoting_field()
    keep_columns: str = option(
        "all",
        "input columns copied into each prediction, before it: all, none, or a comma-separated list (e.g. id)",
    )
    batch_size: int = batch_size_field()
    device: str = device_field()
    backend: Literal["torch", "onnx"] = backend_field()
    progress: bool | None = progress_field()

    def validate(self) -> PredictConfig:
        problems = common_problems(self) + reading_problems(self)
        if (self.text is None) == (self.input is None):
            problems.append("give exactly one of --text or --input")
        if self.pair is not None and self.text is None:
            problems.append("--pair goes with --text")
        if self.output is not None and self.input is None:
            problems.append("--output goes with --input")
        raise_if(problems)
        return self


@dataclass
class QuickstartConfig:
    """Fine-tune the default encoder on the bundled SST-2 sample, evaluate, and predict two sentences."""

    output: str = option("runs/quickstart", "run directory to write")
    epochs: int = option(2, "passes over the sample")
    train_limit: int | None = option(None, "use only the first N sample rows")
    overwrite: bool = option(True, "replace an earlier quickstart run")
    progress: bool | None = progress_field()

    def validate(self) -> QuickstartConfig:
        problems = []
        if self.epochs < 1:
            problems.append(f"--epochs must be at least 1, got {self.epochs}")
        raise_if(problems)
        return self


@dataclass
class TasksConfig:
    """List the named tasks: corpus, labels, metrics, sizes, licence, and where each is looked for."""

    data_dir: str | None = data_dir_field("folder searched first [default: $BERTFIT_DATA_DIR]")
    cache_dir: str | None = cache_dir_field(
        "download cache [default: $BERTFIT_CACHE or ~/.cache/bertfit]"
    )
    json: bool = option(False, "print JSON records instead of a table")

    def validate(self) -> TasksConfig:
        return self


@dataclass
class DataConfig:
    """Get a task's corpus ready: 'download' fetches and verifies it, 'locate' says where it is."""

    action: Literal["download", "locate"] = option(None, "download or locate", positional=True)
    task: str = option(None, "task name (see 'bertfit tasks')", positional=True)
    data_dir: str | None = data_dir_field("folder searched first [default: $BERTFIT_DATA_DIR]")
    cache_dir: str | None = cache_dir_field(
        "download cache [default: $BERTFIT_CACHE or ~/.cache/bertfit]"
    )
    progress: bool | None = progress_field()

    def validate(self) -> DataConfig:
        return self


@dataclass
class ExportConfig:
    """Write a finished run as a model hub takes it (hf), or as ONNX for fast portable inference."""

    run_dir: str = option(
        None, "finished run directory written by 'bertfit train'", positional=True
    )
    format: Literal["hf", "onnx"] = option(
        "hf",
        "hf: the Hugging Face layout that transformers loads (sentence-transformers for a "
        "bi-encoder run); onnx: model.onnx with dynamic batch and length, checked against PyTorch",
    )
    output: str | None = option(
        None, "the folder to write (nothing else goes in it) [default for onnx: RUN/onnx]"
    )
    quantize: Literal["int8"] | None = option(
        None, "onnx: also write model_quantized.onnx, dynamically quantised to int8"
    )
    data: str | None = option(
        None, "onnx: a labelled file to score before and after quantising (as 'bertfit evaluate')"
    )
    overwrite: bool = option(False, "replace an existing non-empty --output folder")

    def validate(self) -> ExportConfig:
        problems = []
        if self.format not in ("hf", "onnx"):
            problems.append(f"--format must be hf or onnx, got {self.format!r}")
        if self.format == "hf" and not self.output:
            problems.append("give --output DIR")
        if self.format == "hf" and (self.quantize or self.data):
            problems.append("--quantize and --data go with --format onnx")
        if self.data and not self.quantize:
            problems.append("--data scores the model before and after --quantize int8; add it")
        if self.data and not Path(self.data).is_file():
            problems.append(f"--data {self.data}: no such file")
        raise_if(problems)
        return self

    def destination(self) -> Path:
        """The folder to write: --output, else for onnx the run's own ``onnx/`` folder."""
        if self.output:
            return Path(self.output)
        return Path(self.run_dir) / "onnx"
