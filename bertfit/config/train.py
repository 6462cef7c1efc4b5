"""``TrainConfig``: every option of ``bertfit train``, in named groups, with its checks and the
defaults that depend on the model or the task.

``TrainConfig(train="train.tsv", output="runs/x")``. ``validate()`` reports every problem the
config alone shows, all at once, before anything heavy is loaded; ``resolve(encoder, positions)``
then fills what depends on the model and the input (``max_length``, the measured recipes of
``bertfit.config.recipes``) and the task (``metric``) in one place.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any, Literal

from bertfit.config.fields import (
    DEFAULT_MODEL,
    PRECISIONS,
    TRUNCATIONS,
    common_problems,
    delimiter_field,
    flag,
    header_field,
    option,
    progress_field,
    quoting_field,
    raise_if,
    skip_bad_rows_field,
)
from bertfit.config.recipes import default_batch_size, recipe
from bertfit.data.labels import METRICS, MULTI, PAIRS, REGRESSION, SINGLE, parse_label_names
from bertfit.data.layout import reading_problems
from bertfit.errors import ConfigError
from bertfit.models.encoders import DEFAULT_NAME, Encoder

DEFAULT_MAX_LENGTH = 128
OBJECTIVE_PROBLEMS = {"cosine": REGRESSION, "softmax": SINGLE, "contrastive": PAIRS}
OBJECTIVE_METRICS = {"cosine": "spearman", "contrastive": "recall_at_1", "softmax": "accuracy"}


@dataclass
class TrainConfig:
    """Fine-tune a pretrained encoder on a labelled file and write a run directory."""

    # --- data: what is read, and how it becomes model inputs
    train: str | None = option(
        None, "training file: .csv, .tsv or .jsonl, optionally .gz (or use --task)"
    )
    dev: str | None = option(
        None, "dev file; without it a stratified --dev-fraction of train is held out"
    )
    task: str | None = option(
        None,
        "a named corpus instead of --train: snli, imdb, nsmc, sst2, mnli, ... (see 'bertfit tasks')",
    )
    output: str | None = option(
        None, "run directory to write (model, metrics, checkpoints, results)"
    )
    data_dir: str | None = option(
        None,
        "folder searched first for the task's archive or extracted folder [default: $BERTFIT_DATA_DIR]",
    )
    download: bool = option(True, "download a task's corpus when no local copy is found")
    train_split: str = option("train", "the task's split to train on")
    eval_split: str | None = option(
        None, "the task's split used as dev [default: the task's dev split, e.g. dev_matched]"
    )
    text_column: str = option(
        "text", "column with the (first) text, or its number (0-based; files without a header)"
    )
    pair_column: str | None = option(None, "column with the second text of a pair task")
    label_column: str = option("label", "column with the label")
    label_separator: str = option("|", "separator of several labels in one CSV/TSV field")
    header: bool = header_field()
    delimiter: str | None = delimiter_field()
    quoting: Literal["csv", "none"] | None = quoting_field()
    label_names: str | None = option(
        None,
        "names for the labels, e.g. 0=negative,1=positive: predictions, reports and config.json's id2label use them [default: a task's own names]",
    )
    as_classes: bool = option(
        False,
        "train the labels as classes even when they look like scores, sets of labels or row ids (bertfit stops and asks otherwise)",
    )
    train_limit: int | None = option(
        None, "use only the first N training rows (a seeded sample for label-grouped corpora)"
    )
    dev_fraction: float | None = option(
        None,
        "hold out this fraction of train as dev (stratified, seeded) [default: 0.1 when there is no dev file or split]",
    )
    skip_bad_rows: bool = skip_bad_rows_field()
    max_length: int | None = option(
        None,
        "maximum tokens per example, special tokens included [default: 128, or the model's limit when smaller]",
    )
    truncation: Literal["longest-first", "proportional", "head-tail"] = option(
        "longest-first", "how over-long inputs are cut"
    )

    # --- model: the encoder, the problem and what of it trains
    model: str = option(
        DEFAULT_MODEL,
        "encoder: 'default' (all-MiniLM-L6-v2, offline), a Hugging Face folder or hub name, or a d2l checkpoint (folder or .zip)",
    )
    regression: bool = option(False, "the label is a number: one output, mean squared error")
    multi_label: bool = option(
        False, "each row has a set of labels (JSON list, or separated by --label-separator)"
    )
    objective: Literal["cosine", "contrastive", "softmax"] | None = option(
        None,
        "train a bi-encoder (sentence embeddings) instead of a classifier: cosine (pairs with a similarity score), contrastive (text/positive pairs, in-batch negatives: with several processes the negatives come from the whole global batch, all processes, and with --grad-accum from one pass's examples across the processes), softmax (SBERT's NLI objective)",
    )
    pooling: Literal["mean", "cls", "max"] = option(
        "mean", "bi-encoder: how token vectors become one"
    )
    normalize: bool = option(False, "bi-encoder: store L2-normalised embeddings (off by default)")
    dropout: float | None = option(
        None,
        "override the encoder's dropout, hidden and attention [default: the encoder's; 0.0339 for text-pair classifiers on the default encoder]",
    )
    freeze_embeddings: bool = option(False, "do not train the embedding layer")
    activation_checkpointing: bool = option(
        False,
        "keep only each layer's input and recompute the rest in the backward pass, for long inputs on little memory (IMDb at 256 tokens, 2 CPU cores: peak memory 2.98 -> 1.67 GB, but 15.0 -> 8.5 examples/s)",
    )
    train_word_embeddings: bool | None = option(
        None,
        "fine-tune the word-embedding matrix too [default: off for the default encoder, where it is half the weights, costs 15%% of the time and gained no accuracy in our measurements; on for others]",
    )
    train_last_layers: int | None = option(
        None, "train only the last N encoder layers and the head"
    )

    # --- optimisation
    epochs: int = option(3, "passes over the training data")
    batch_size: int | None = option(
        None,
        "examples per optimizer step: the global batch, the same on any number of processes "
        "(split across --nproc processes and --grad-accum passes; it must divide evenly) "
        "[default: 16 for text-pair classifiers, else 32]",
    )
    grad_accum: int = option(
        1,
        "passes each optimizer step's batch is computed in (gradients accumulated): the same "
        "result with 1/N of the activation memory",
    )
    lr: float | None = option(
        None,
        "peak learning rate [default: for the default encoder 1.5e-4, 1.109e-4 for text-pair classifiers; 1e-4 for d2l, 3e-5 for others, 2e-5 for bi-encoders]",
    )
    warmup_ratio: float | None = option(
        None,
        "fraction of steps with linear warmup [default: 0.1; 0.0265 for text-pair classifiers on the default encoder]",
    )
    weight_decay: float | None = option(
        None,
        "AdamW weight decay, not on biases and LayerNorm [default: 0.01; 0.0365 for text-pair classifiers on the default encoder]",
    )
    layer_lr_decay: float | None = option(
        None,
        "learning-rate factor per block going down from the head, 1 for the same rate everywhere [default: for the default encoder 0.9, 0.887 for text-pair classifiers; else 1]",
    )
    max_grad_norm: float = option(1.0, "gradient clipping norm (0 turns it off)")
    scale: float = option(20.0, "contrastive: similarity scale (1 / temperature)")
    symmetric: bool = option(False, "contrastive: also match each positive to its text")
    length_groups: int = option(
        50,
        "batches per length-sorted group: larger wastes less compute on padding, 1 gives random batches",
    )
    seed: int = option(42, "random seed for initialisation, split and batch order")
    split_seed: int | None = option(
        None, "seed of the held-out dev split and of row sampling alone [default: --seed]"
    )

    # --- loop: evaluation, the best model, checkpoints
    metric: str | None = option(
        None,
        "dev metric that picks the best checkpoint: accuracy, macro_f1, f1, mcc; spearman, pearson (regression); micro_f1, macro_f1, exact_match (multi-label) [default: the task's first metric, accuracy, spearman or micro_f1]",
    )
    tune_thresholds: bool = option(
        False, "multi-label: tune each label's decision threshold on dev (else 0.5)"
    )
    eval_steps: int | None = option(None, "also evaluate every N optimizer steps")
    early_stopping_patience: int | None = option(
        None, "stop after N evaluations without dev improvement"
    )
    save_steps: int | None = option(
        None,
        "also save a resumable checkpoint every N optimizer steps (one is saved at each epoch end, unless --save-total-limit 0)",
    )
    save_total_limit: int = option(
        1,
        "keep the last N checkpoints (and the best one); older ones are deleted; 0 saves none (the run cannot be resumed)",
    )
    keep_checkpoints: bool = option(
        False,
        "keep the resumable checkpoints when the run finishes (by default they are removed then: a finished run is its model)",
    )
    resume: str | None = option(
        None,
        "continue a run from its last complete checkpoint: its run directory, or 'auto' to resume --output when it holds one (and start fresh when not)",
    )
    overwrite: bool = option(False, "replace an existing non-empty output directory")
    skip_nonfinite: bool = option(
        False, "skip a batch whose loss is NaN or infinite (with a warning) instead of stopping"
    )
    tensorboard: bool = option(
        False,
        "also log loss, learning rate, throughput and metrics for TensorBoard (RUN/tensorboard)",
    )

    # --- runtime: where and how tensors run
    precision: Literal["auto", "bf16", "fp16", "fp32"] = option(
        "auto", "auto: bf16 where the CPU/GPU supports it, fp16 on older GPUs, else fp32"
    )
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    threads: int | None = option(
        None, "CPU threads for torch [default: physical cores, shared out among --nproc processes]"
    )
    nproc: int | None = option(
        None,
        "train data-parallel in N processes on this machine, started by torchrun's elastic agent "
        "(or launch 'torchrun --nproc-per-node N -m bertfit train ...' yourself); --batch-size "
        "stays the batch of one step, cut across the processes",
    )
    max_restarts: int = option(
        0,
        "with --nproc: restart the processes up to N times after one fails (is killed); they "
        "resume from the last checkpoint by themselves (give --save-steps for a recent one)",
    )
    ddp_backend: Literal["nccl", "gloo"] | None = option(
        None, "how processes exchange gradients [default: nccl on GPUs, gloo on CPUs]"
    )
    cache_dir: str | None = option(
        None,
        "where tokenised inputs and downloaded corpora are kept [default: $BERTFIT_CACHE or ~/.cache/bertfit]",
    )
    deterministic: bool = option(
        False,
        "deterministic algorithms only: two CPU runs with the same seed give identical weights",
    )
    progress: bool | None = progress_field()

    def validate(self, in_memory: tuple[str, ...] = ()) -> TrainConfig:
        """Every problem the config shows by itself, reported together.

        ``in_memory`` names the sources given as rows rather than files (``"train"``, ``"dev"``).
        """
        problems = common_problems(self) + reading_problems(self)
        problems += self._data_problems(in_memory)
        problems += self._task_problems() if self.task is not None else []
        problems += self._model_problems()
        problems += self._optimisation_problems()
        problems += self._loop_problems()
        raise_if(problems)
        return self

    def option_problems(self) -> list[str]:
        """Problems of the training options alone, no data needed (for search spaces)."""
        return self._model_problems() + self._optimisation_problems() + self._loop_problems()

    def _data_problems(self, in_memory: tuple[str, ...]) -> list[str]:
        problems = []
        has_train = self.train is not None or "train" in in_memory
        has_dev = self.dev is not None or "dev" in in_memory
        if self.output is None:
            problems.append("give --output DIR (or --resume RUN_DIR to continue a run)")
        for name in in_memory:
            if getattr(self, name) is not None:
                problems.append(
                    f"{name}: rows in memory and the file {getattr(self, name)!r} were both given; give one"
                )
        if has_train == (self.task is not None):
            problems.append("give exactly one of --train FILE or --task NAME")
        if self.task is not None and has_dev:
            problems.append(
                "--dev goes with --train; a task has its own dev split (see --eval-split)"
            )
        if self.task is None and (self.eval_split is not None or self.train_split != "train"):
            problems.append("--train-split and --eval-split go with --task")
        if has_dev and self.dev_fraction is not None:
            problems.append("give --dev or --dev-fraction, not both")
        if self.dev_fraction is not None and not 0 < self.dev_fraction < 1:
            problems.append(f"--dev-fraction must be between 0 and 1, got {self.dev_fraction}")
        if not self.label_separator:
            problems.append("--label-separator must not be empty")
        if self.label_names is not None:
            try:
                parse_label_names(self.label_names)
            except ValueError as err:
                problems.append(f"--label-names: {err}")
            if self.regression:
                problems.append("--label-names names classes; a --regression score has none")
        if self.train_limit is not None and self.train_limit < 1:
            problems.append(f"--train-limit must be at least 1, got {self.train_limit}")
        if self.truncation not in TRUNCATIONS:
            problems.append(
                f"--truncation must be one of {', '.join(TRUNCATIONS)}, got {self.truncation!r}"
            )
        return problems

    def _task_problems(self) -> list[str]:
        """The task must exist and have the splits named (HF's ``validation`` is ``dev``)."""
        from bertfit.data.tasks import get_task

        try:
            task = get_task(self.task)
        except ConfigError as err:
            return [str(err)]
        problems = []
        for opt, split in (("--train-split", self.train_split), ("--eval-split", self.eval_split)):
            if split is not None and task.split_name(split) not in task.splits:
                known = ", ".join(task.splits)
                problems.append(
                    f"{opt}: task {task.name} has no split {split!r}; its splits: {known}"
                )
        return problems

    def _model_problems(self) -> list[str]:
        problems = []
        if self.objective is not None and (self.regression or self.multi_label):
            problems.append("--objective trains a bi-encoder; drop --regression/--multi-label")
        if self.objective is not None and self.task is None and self.pair_column is None:
            problems.append("--objective needs text pairs: give --pair-column")
        if self.regression and self.multi_label:
            problems.append("--regression and --multi-label exclude each other")
        if self.task is not None and (self.regression or self.multi_label):
            problems.append("a task decides its problem; drop --regression/--multi-label")
        if self.train_last_layers is not None and self.train_last_layers < 0:
            problems.append(f"--train-last-layers must be 0 or more, got {self.train_last_layers}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            problems.append(f"--dropout must be in [0, 1), got {self.dropout}")
        return problems

    def _optimisation_problems(self) -> list[str]:
        problems = []
        for name in ("epochs", "length_groups", "grad_accum"):
            if getattr(self, name) < 1:
                problems.append(f"{flag(name)} must be at least 1, got {getattr(self, name)}")
        if self.lr is not None and self.lr <= 0:
            problems.append(f"--lr must be positive, got {self.lr}")
        if self.warmup_ratio is not None and not 0 <= self.warmup_ratio < 1:
            problems.append(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.weight_decay is not None and self.weight_decay < 0:
            problems.append(f"--weight-decay must be 0 or more, got {self.weight_decay}")
        if self.layer_lr_decay is not None and not 0 < self.layer_lr_decay <= 1:
            problems.append(f"--layer-lr-decay must be in (0, 1], got {self.layer_lr_decay}")
        if self.max_grad_norm < 0:
            problems.append(f"--max-grad-norm must be 0 (off) or more, got {self.max_grad_norm}")
        if self.scale <= 0:
            problems.append(f"--scale must be positive, got {self.scale}")
        if not 0 <= self.seed < 2**32:
            problems.append(f"--seed must be between 0 and 4294967295, got {self.seed}")
        return problems

    def _loop_problems(self) -> list[str]:
        problems = self._metric_problems()
        for name in ("eval_steps", "early_stopping_patience", "save_steps", "threads", "nproc"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"{flag(name)} must be at least 1, got {value}")
        if self.max_restarts < 0:
            problems.append(f"--max-restarts must be 0 or more, got {self.max_restarts}")
        elif self.max_restarts and not (self.nproc and self.nproc > 1):
            problems.append(
                "--max-restarts restarts the processes --nproc N starts; under torchrun give "
                "torchrun's own --max-restarts"
            )
        if self.save_total_limit < 0:
            problems.append(
                f"--save-total-limit must be 0 (no checkpoints) or more, got {self.save_total_limit}"
            )
        if self.save_total_limit == 0 and (self.save_steps or self.keep_checkpoints):
            needs = "--save-steps" if self.save_steps else "--keep-checkpoints"
            problems.append(f"{needs} needs checkpoints, but --save-total-limit 0 saves none")
        if self.resume is not None and self.overwrite:
            problems.append("--resume continues a run and --overwrite replaces it; give one")
        if self.tune_thresholds and not self.multi_label:
            problems.append("--tune-thresholds goes with --multi-label")
        if self.precision not in PRECISIONS:
            problems.append(
                f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        return problems

    def _metric_problems(self) -> list[str]:
        """--metric must be one the problem has (known from the flags or the task, no data)."""
        if self.metric is None:
            return []
        if self.objective is not None:
            fixed = OBJECTIVE_METRICS.get(self.objective)
            if fixed is not None and self.metric != fixed:
                return [f"--metric: --objective {self.objective} is judged by {fixed}"]
            return []
        try:
            allowed = METRICS[self.problem()]
        except ConfigError:  # an unknown task: reported with the task's problems
            return []
        if self.metric not in allowed:
            return [
                f"--metric {self.metric} does not fit this problem; choose one of {', '.join(allowed)}"
            ]
        return []

    def problem(self) -> str:
        """single-label, regression, multi-label or (contrastive) pairs: from the objective, the
        task or the flags. The one place that decides it."""
        if self.objective is not None:
            return OBJECTIVE_PROBLEMS[self.objective]
        if self.task:
            from bertfit.data.tasks import get_task

            return get_task(self.task).problem
        return REGRESSION if self.regression else MULTI if self.multi_label else SINGLE

    def resolve(self, encoder: Encoder, positions: int | None) -> TrainConfig:
        """A copy with every default that depends on the model or the task filled in.

        ``positions`` is the most tokens the model takes (None when it does not say)."""
        from bertfit.data.tasks import get_task

        chosen = recipe(
            default_encoder=encoder.name == DEFAULT_NAME,
            d2l=encoder.kind == "d2l",
            bi_encoder=self.objective is not None,
            pair_classifier=self.pair_classifier(),
        )
        chosen["max_length"] = min(DEFAULT_MAX_LENGTH, positions or DEFAULT_MAX_LENGTH)
        chosen["metric"] = OBJECTIVE_METRICS.get(self.objective) or (
            get_task(self.task).metrics[0] if self.task else METRICS[self.problem()][0]
        )
        unset = {name: value for name, value in chosen.items() if getattr(self, name) is None}
        return dataclasses.replace(self, **unset)

    def pair_classifier(self) -> bool:
        """Whether this trains a classifier (not a regression or a bi-encoder) on text pairs."""
        from bertfit.data.tasks import get_task

        pairs = self.pair_column is not None or bool(self.task and get_task(self.task).pair)
        return pairs and self.objective is None and self.problem() != REGRESSION

    def global_batch(self) -> int:
        """--batch-size, or its default for this input (known before the model is loaded)."""
        if self.batch_size is not None:
            return self.batch_size
        return default_batch_size(self.pair_classifier())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
