"""One typed config per command. The CLI is generated from these, so flags and API never drift.

Each field carries its help text in ``metadata["help"]``; ``metadata["positional"]`` makes it a
positional CLI argument. ``validate()`` collects every problem and reports them together.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from bertfit.errors import ConfigError

DEFAULT_MODEL = "default"
TRUNCATIONS = ("longest-first", "proportional", "head-tail")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def _f(default: Any, help: str, **meta: Any) -> Any:
    return field(default=default, metadata={"help": help, **meta})


def _checkpoint_field() -> Any:
    """``--checkpoint`` of the commands that load a trained run."""
    return _f(
        None,
        "use a checkpoint of the run instead of its final model: best, last or a step (works on an unfinished run)",
    )


def _problems_common(cfg: Any) -> list[str]:
    problems = []
    if getattr(cfg, "batch_size", 1) < 1:
        problems.append(f"--batch-size must be at least 1, got {cfg.batch_size}")
    return problems


def _raise_if(problems: list[str]) -> None:
    if problems:
        raise ConfigError("; ".join(problems))


@dataclass
class TrainConfig:
    """Fine-tune a pretrained encoder on a labelled file and write a run directory."""

    train: str | None = _f(
        None, "training file: .csv, .tsv or .jsonl, optionally .gz (or use --task)"
    )
    output: str | None = _f(None, "run directory to write (model, metrics, checkpoints, results)")
    task: str | None = _f(
        None,
        "a named corpus instead of --train: snli, imdb, nsmc, sst2, mnli, ... (see 'bertfit tasks')",
    )
    data_dir: str | None = _f(
        None,
        "folder searched first for the task's archive or extracted folder [default: $BERTFIT_DATA_DIR]",
    )
    download: bool = _f(True, "download a task's corpus when no local copy is found")
    train_split: str = _f("train", "the task's split to train on")
    eval_split: str | None = _f(
        None, "the task's split used as dev [default: the task's dev split, e.g. dev_matched]"
    )
    dev: str | None = _f(
        None, "dev file; without it a stratified --dev-fraction of train is held out"
    )
    model: str = _f(
        DEFAULT_MODEL,
        "encoder: 'default' (all-MiniLM-L6-v2, offline), a Hugging Face folder or hub name, or a d2l checkpoint (folder or .zip)",
    )
    text_column: str = _f(
        "text", "column with the (first) text; a number (0-based) for files without a header"
    )
    pair_column: str | None = _f(None, "column with the second text of a pair task")
    label_column: str = _f("label", "column with the label")
    regression: bool = _f(False, "the label is a number: one output, mean squared error")
    multi_label: bool = _f(
        False, "each row has a set of labels (JSON list, or separated by --label-separator)"
    )
    label_separator: str = _f("|", "separator of several labels in one CSV/TSV field")
    tune_thresholds: bool = _f(
        False, "multi-label: tune each label's decision threshold on dev (else 0.5)"
    )
    objective: Literal["cosine", "contrastive", "softmax"] | None = _f(
        None,
        "train a bi-encoder (sentence embeddings) instead of a classifier: cosine (pairs with a similarity score), contrastive (text/positive pairs, in-batch negatives), softmax (SBERT's NLI objective)",
    )
    pooling: Literal["mean", "cls", "max"] = _f("mean", "bi-encoder: how token vectors become one")
    normalize: bool = _f(False, "bi-encoder: store L2-normalised embeddings (off by default)")
    scale: float = _f(20.0, "contrastive: similarity scale (1 / temperature)")
    symmetric: bool = _f(False, "contrastive: also match each positive to its text")
    train_limit: int | None = _f(
        None, "use only the first N training rows (a seeded sample for label-grouped corpora)"
    )
    dev_fraction: float | None = _f(
        None,
        "hold out this fraction of train as dev (stratified, seeded) [default: 0.1 when there is no dev file or split]",
    )
    skip_bad_rows: bool = _f(
        False, "drop rows with an empty text or missing label instead of stopping"
    )
    max_length: int | None = _f(
        None,
        "maximum tokens per example, special tokens included [default: 128, or the model's limit when smaller]",
    )
    truncation: Literal["longest-first", "proportional", "head-tail"] = _f(
        "longest-first", "how over-long inputs are cut"
    )
    epochs: int = _f(3, "passes over the training data")
    batch_size: int = _f(32, "examples per optimizer step (before accumulation)")
    length_groups: int = _f(
        50,
        "batches per length-sorted group: larger wastes less compute on padding, 1 gives random batches",
    )
    grad_accum: int = _f(1, "gradient accumulation steps")
    lr: float | None = _f(
        None,
        "peak learning rate [default: 1.5e-4 for the default encoder, 1e-4 for d2l, 3e-5 for others]",
    )
    warmup_ratio: float = _f(0.1, "fraction of steps with linear warmup")
    weight_decay: float = _f(0.01, "AdamW weight decay (not on biases and LayerNorm)")
    layer_lr_decay: float | None = _f(
        None,
        "learning-rate factor per block going down from the head, 1 for the same rate everywhere [default: 0.9 for the default encoder, else 1]",
    )
    max_grad_norm: float = _f(1.0, "gradient clipping norm (0 turns it off)")
    dropout: float | None = _f(None, "override the encoder's hidden dropout")
    freeze_embeddings: bool = _f(False, "do not train the embedding layer")
    train_word_embeddings: bool | None = _f(
        None,
        "fine-tune the word-embedding matrix too [default: off for the default encoder, where it is half the weights, costs 15%% of the time and gained no accuracy in our measurements; on for others]",
    )
    train_last_layers: int | None = _f(None, "train only the last N encoder layers and the head")
    eval_steps: int | None = _f(None, "also evaluate every N optimizer steps")
    early_stopping_patience: int | None = _f(
        None, "stop after N evaluations without dev improvement"
    )
    metric: str | None = _f(
        None,
        "dev metric that picks the best checkpoint: accuracy, macro_f1, f1, mcc; spearman, pearson (regression); micro_f1, macro_f1, exact_match (multi-label) [default: the task's first metric, accuracy, spearman or micro_f1]",
    )
    seed: int = _f(42, "random seed for initialisation, split and batch order")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = _f(
        "auto", "auto: bf16 where the CPU/GPU supports it, fp16 on older GPUs, else fp32"
    )
    device: str = _f("auto", "auto, cpu, cuda or cuda:N")
    threads: int | None = _f(None, "CPU threads for torch [default: physical cores]")
    cache_dir: str | None = _f(
        None,
        "where tokenised inputs and downloaded corpora are kept [default: $BERTFIT_CACHE or ~/.cache/bertfit]",
    )
    overwrite: bool = _f(False, "replace an existing non-empty output directory")
    save_steps: int | None = _f(
        None,
        "also save a resumable checkpoint every N optimizer steps (one is always saved at each epoch end)",
    )
    save_total_limit: int = _f(
        1, "keep the last N checkpoints (and the best one); older ones are deleted"
    )
    resume: str | None = _f(
        None,
        "continue a run from its last complete checkpoint: its run directory, or 'auto' to resume --output when it holds one (and start fresh when not)",
    )
    deterministic: bool = _f(
        False,
        "deterministic algorithms only: two CPU runs with the same seed give identical weights",
    )
    skip_nonfinite: bool = _f(
        False, "skip a batch whose loss is NaN or infinite (with a warning) instead of stopping"
    )
    progress: bool = _f(True, "show a progress bar")
    tensorboard: bool = _f(
        False,
        "also log loss, learning rate, throughput and metrics for TensorBoard (RUN/tensorboard)",
    )

    def validate(self) -> TrainConfig:
        problems = _problems_common(self)
        if self.epochs < 1:
            problems.append(f"--epochs must be at least 1, got {self.epochs}")
        if self.length_groups < 1:
            problems.append(f"--length-groups must be at least 1, got {self.length_groups}")
        if self.grad_accum < 1:
            problems.append(f"--grad-accum must be at least 1, got {self.grad_accum}")
        if self.dev_fraction is not None and not 0 < self.dev_fraction < 1:
            problems.append(f"--dev-fraction must be between 0 and 1, got {self.dev_fraction}")
        if self.output is None:
            problems.append("give --output DIR (or --resume RUN_DIR to continue a run)")
        if self.eval_steps is not None and self.eval_steps < 1:
            problems.append(f"--eval-steps must be at least 1, got {self.eval_steps}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            problems.append(
                f"--early-stopping-patience must be at least 1, got {self.early_stopping_patience}"
            )
        if self.weight_decay < 0:
            problems.append(f"--weight-decay must be 0 or more, got {self.weight_decay}")
        if self.max_grad_norm < 0:
            problems.append(f"--max-grad-norm must be 0 (off) or more, got {self.max_grad_norm}")
        if self.threads is not None and self.threads < 1:
            problems.append(f"--threads must be at least 1, got {self.threads}")
        if not 0 <= self.seed < 2**32:
            problems.append(f"--seed must be between 0 and 4294967295, got {self.seed}")
        if self.save_steps is not None and self.save_steps < 1:
            problems.append(f"--save-steps must be at least 1, got {self.save_steps}")
        if self.save_total_limit < 1:
            problems.append(f"--save-total-limit must be at least 1, got {self.save_total_limit}")
        if self.resume is not None and self.overwrite:
            problems.append("--resume continues a run and --overwrite replaces it; give one")
        if (self.train is None) == (self.task is None):
            problems.append("give exactly one of --train FILE or --task NAME")
        if self.task is not None and self.dev is not None:
            problems.append(
                "--dev goes with --train; a task has its own dev split (see --eval-split)"
            )
        if self.task is None and (self.eval_split is not None or self.train_split != "train"):
            problems.append("--train-split and --eval-split go with --task")
        if self.dev is not None and self.dev_fraction is not None:
            problems.append("give --dev or --dev-fraction, not both")
        if self.objective is not None and (self.regression or self.multi_label):
            problems.append("--objective trains a bi-encoder; drop --regression/--multi-label")
        if self.objective is not None and self.task is None and self.pair_column is None:
            problems.append("--objective needs text pairs: give --pair-column")
        if self.scale <= 0:
            problems.append(f"--scale must be positive, got {self.scale}")
        if self.regression and self.multi_label:
            problems.append("--regression and --multi-label exclude each other")
        if self.tune_thresholds and not self.multi_label:
            problems.append("--tune-thresholds goes with --multi-label")
        if not self.label_separator:
            problems.append("--label-separator must not be empty")
        if self.max_length is not None and self.max_length < 8:
            problems.append(f"--max-length must be at least 8, got {self.max_length}")
        if self.lr is not None and self.lr <= 0:
            problems.append(f"--lr must be positive, got {self.lr}")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.train_limit is not None and self.train_limit < 1:
            problems.append(f"--train-limit must be at least 1, got {self.train_limit}")
        if self.train_last_layers is not None and self.train_last_layers < 0:
            problems.append(f"--train-last-layers must be 0 or more, got {self.train_last_layers}")
        if self.layer_lr_decay is not None and not 0 < self.layer_lr_decay <= 1:
            problems.append(f"--layer-lr-decay must be in (0, 1], got {self.layer_lr_decay}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            problems.append(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.truncation not in TRUNCATIONS:
            problems.append(
                f"--truncation must be one of {', '.join(TRUNCATIONS)}, got {self.truncation!r}"
            )
        if self.precision not in PRECISIONS:
            problems.append(
                f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        _raise_if(problems)
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EvaluateConfig:
    """Score a trained run on a labelled file: accuracy, macro-F1, per-class P/R/F1, confusion."""

    run_dir: str = _f(
        None,
        "run directory written by 'bertfit train', or with --objective cosine any encoder (default, a folder, a hub name)",
        positional=True,
    )
    checkpoint: str | None = _checkpoint_field()
    data: str | None = _f(None, "labelled file to score (or use --task)")
    objective: Literal["cosine"] | None = _f(
        None,
        "score a bi-encoder: Pearson/Spearman of the cosine of the two texts' embeddings against the gold score",
    )
    task: str | None = _f(None, "score on a named corpus's split instead (see 'bertfit tasks')")
    split: str | None = _f(None, "the task's split [default: its dev split]")
    data_dir: str | None = _f(
        None, "folder searched first for the task's files [default: $BERTFIT_DATA_DIR]"
    )
    cache_dir: str | None = _f(
        None, "downloaded corpora [default: $BERTFIT_CACHE or ~/.cache/bertfit]"
    )
    download: bool = _f(True, "download a task's corpus when no local copy is found")
    text_column: str | None = _f(None, "text column [default: as trained]")
    pair_column: str | None = _f(None, "pair column [default: as trained]")
    label_column: str | None = _f(None, "label column [default: as trained]")
    batch_size: int = _f(64, "examples per forward pass")
    json: bool = _f(False, "print one JSON object instead of a table")
    device: str = _f("auto", "auto, cpu, cuda or cuda:N")

    def validate(self) -> EvaluateConfig:
        problems = _problems_common(self)
        if (self.data is None) == (self.task is None):
            problems.append("give exactly one of --data FILE or --task NAME")
        if self.split is not None and self.task is None:
            problems.append("--split goes with --task")
        _raise_if(problems)
        return self


@dataclass
class CompareConfig:
    """Compare runs on one page: curves and metrics side by side, and a paired bootstrap test."""

    runs: list[str] = _f(None, "two or more run directories", positional=True)
    data: str | None = _f(
        None, "labelled file to score every run on, for the paired test (or use --task)"
    )
    task: str | None = _f(None, "a named corpus's split to score every run on")
    split: str | None = _f(None, "the task's split [default: its dev split]")
    data_dir: str | None = _f(None, "folder searched first for the task's files")
    output: str = _f("compare.html", "the page to write (PNGs go beside it)")
    json: bool = _f(False, "print the comparison as JSON")
    device: str = _f("auto", "auto, cpu, cuda or cuda:N")

    def validate(self) -> CompareConfig:
        problems = []
        if not self.runs or len(self.runs) < 2:
            problems.append("give at least two run directories")
        if self.data is not None and self.task is not None:
            problems.append("give --data or --task, not both")
        if not self.output.lower().endswith((".html", ".htm")):
            problems.append(f"--output must end in .html, got {self.output!r}")
        _raise_if(problems)
        return self


@dataclass
class ReportConfig:
    """Rebuild a run's report.html (curves, confusion matrix, calibration, worst mistakes)."""

    run_dir: str = _f(None, "run directory written by 'bertfit train'", positional=True)

    def validate(self) -> ReportConfig:
        return self


@dataclass
class ExplainConfig:
    """Why a classifier decided: word scores by [CLS] attention and by integrated gradients."""

    run_dir: str = _f(None, "run directory written by 'bertfit train'", positional=True)
    checkpoint: str | None = _checkpoint_field()
    text: str | None = _f(None, "the text to explain")
    pair: str | None = _f(None, "the second text, for a pair task")
    input: str | None = _f(
        None, "explain every row of this file instead (.csv/.tsv/.jsonl); --output is then a folder"
    )
    steps: int = _f(50, "integrated-gradients steps (more: closer to exact, slower)")
    output: str | None = _f(
        None,
        "write a self-contained HTML page here (and a PNG beside it, same name, .png); with --input, a folder for one page per row and index.html",
    )
    json: bool = _f(False, "print the tokens, words and scores as one JSON object")
    device: str = _f("auto", "auto, cpu, cuda or cuda:N")

    def validate(self) -> ExplainConfig:
        problems = []
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
        _raise_if(problems)
        return self


def _embedding_problems(cfg: Any) -> list[str]:
    problems = _problems_common(cfg)
    if cfg.max_length is not None and cfg.max_length < 8:
        problems.append(f"--max-length must be at least 8, got {cfg.max_length}")
    return problems


@dataclass
class EmbedConfig:
    """Embed every text of a file with a bi-encoder run or any encoder; write .npy or .parquet."""

    model: str = _f(
        None,
        "bi-encoder run directory, or an encoder: default, a folder, a hub name",
        positional=True,
    )
    input: str = _f(
        None, "texts: .txt (one per line), or .csv/.tsv/.jsonl with --text-column", required=True
    )
    output: str = _f(
        None, "where the vectors go: .npy (float32, one row per text) or .parquet", required=True
    )
    text_column: str = _f("text", "column of the texts in a .csv/.tsv/.jsonl input")
    normalize: bool | None = _f(None, "L2-normalise the vectors [default: as the model declares]")
    batch_size: int = _f(64, "texts per forward pass")
    max_length: int | None = _f(None, "tokens per text [default: the model's, e.g. 256]")
    device: str = _f("auto", "auto, cpu, cuda or cuda:N")
    progress: bool = _f(True, "show a progress bar")

    def validate(self) -> EmbedConfig:
        _raise_if(_embedding_problems(self))
        return self


@dataclass
class SimilarityConfig:
    """Cosine similarity of two texts' embeddings (a bi-encoder run or any encoder)."""

    model: str = _f(
        None,
        "bi-encoder run directory, or an encoder: default, a folder, a hub name",
        positional=True,
    )
    text: str = _f(None, "the first text", required=True)
    pair: str = _f(None, "the second text", required=True)
    max_length: int | None = _f(None, "tokens per text [default: the model's]")
    batch_size: int = _f(64, "texts per forward pass")
    device: str = _f("auto", "auto, cpu, cuda or cuda:N")

    def validate(self) -> SimilarityConfig:
        _raise_if(_embedding_problems(self))
        return self


@dataclass
class SearchConfig:
    """Exact cosine search: the texts of a corpus nearest to each query."""

    model: str = _f(
        None,
        "bi-encoder run directory, or an encoder: default, a folder, a hub name",
        positional=True,
    )
    corpus: str = _f(
        None, "texts to search: .txt (one per line) or .csv/.tsv/.jsonl", required=True
    )
    query: str | None = _f(None, "one query")
    queries: str | None = _f(None, "a file of queries, like --corpus")
    top_k: int = _f(5, "hits per query")
    output: str | None = _f(None, "write hits as JSONL here [default: print them]")
    text_column: str = _f("text", "column of the texts in .csv/.tsv/.jsonl files")
    batch_size: int = _f(64, "texts per forward pass")
    max_length: int | None = _f(None, "tokens per text [default: the model's]")
    cache: bool = _f(True, "keep the corpus embeddings next to the corpus file for the next search")
    device: str = _f("auto", "auto, cpu, cuda or cuda:N")
    progress: bool = _f(True, "show a progress bar")

    def validate(self) -> SearchConfig:
        problems = _embedding_problems(self)
        if (self.query is None) == (self.queries is None):
            problems.append("give exactly one of --query or --queries")
        if self.top_k < 1:
            problems.append(f"--top-k must be at least 1, got {self.top_k}")
        _raise_if(problems)
        return self


@dataclass
class PredictConfig:
    """Predict labels with a trained run: one text from the command line, or a whole file."""

    run_dir: str = _f(None, "run directory written by 'bertfit train'", positional=True)
    checkpoint: str | None = _checkpoint_field()
    text: str | None = _f(None, "one text to classify")
    pair: str | None = _f(None, "the second text, for a pair task, with --text")
    input: str | None = _f(None, "file of inputs (.csv/.tsv/.jsonl, .gz too)")
    output: str | None = _f(
        None,
        "where batch predictions go; format by extension (.jsonl/.csv/.tsv) [default: JSONL on stdout]",
    )
    text_column: str | None = _f(None, "text column of --input [default: as trained]")
    pair_column: str | None = _f(None, "pair column of --input [default: as trained]")
    batch_size: int = _f(64, "examples per forward pass")
    device: str = _f("auto", "auto, cpu, cuda or cuda:N")

    def validate(self) -> PredictConfig:
        problems = _problems_common(self)
        if (self.text is None) == (self.input is None):
            problems.append("give exactly one of --text or --input")
        if self.pair is not None and self.text is None:
            problems.append("--pair goes with --text")
        if self.output is not None and self.input is None:
            problems.append("--output goes with --input")
        _raise_if(problems)
        return self


@dataclass
class QuickstartConfig:
    """Fine-tune the default encoder on the bundled SST-2 sample, evaluate, and predict two sentences."""

    output: str = _f("runs/quickstart", "run directory to write")
    epochs: int = _f(2, "passes over the sample")
    train_limit: int | None = _f(None, "use only the first N sample rows")
    overwrite: bool = _f(True, "replace an earlier quickstart run")
    progress: bool = _f(True, "show a progress bar")

    def validate(self) -> QuickstartConfig:
        problems = []
        if self.epochs < 1:
            problems.append(f"--epochs must be at least 1, got {self.epochs}")
        _raise_if(problems)
        return self


@dataclass
class TasksConfig:
    """List the named tasks: corpus, labels, metrics, sizes, licence, and where each is looked for."""

    data_dir: str | None = _f(None, "folder searched first [default: $BERTFIT_DATA_DIR]")
    cache_dir: str | None = _f(None, "download cache [default: $BERTFIT_CACHE or ~/.cache/bertfit]")
    json: bool = _f(False, "print JSON records instead of a table")

    def validate(self) -> TasksConfig:
        return self


@dataclass
class DataConfig:
    """Get a task's corpus ready: 'download' fetches and verifies it, 'locate' says where it is."""

    action: Literal["download", "locate"] = _f(None, "download or locate", positional=True)
    task: str = _f(None, "task name (see 'bertfit tasks')", positional=True)
    data_dir: str | None = _f(None, "folder searched first [default: $BERTFIT_DATA_DIR]")
    cache_dir: str | None = _f(None, "download cache [default: $BERTFIT_CACHE or ~/.cache/bertfit]")
    progress: bool = _f(True, "show a progress bar")

    def validate(self) -> DataConfig:
        return self


def config_fields(cls: type) -> list:
    """The dataclass fields of a config, in declaration order."""
    return list(fields(cls))
