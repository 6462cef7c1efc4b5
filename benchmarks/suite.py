"""The whole speed suite: bertfit's training against what users would run instead, in one command.

    python benchmarks/suite.py                 # everything (see benchmarks/README.md for the time)
    python benchmarks/suite.py --quick         # smoke test, a few minutes
    python benchmarks/suite.py --workloads sst2,snli --contenders bertfit,trainer-tuned --repeats 3

Workloads (all-MiniLM-L6-v2, batch 32, 1 epoch, seed 42): ``sst2`` (first 8,000 GLUE SST-2 train
rows, dev 872), ``snli`` (the 9,842 SNLI validation pairs, seeded 90/10 split, 3 labels),
``imdb256`` and ``imdb512`` (a seeded balanced sample of 1,000 IMDb training reviews, 500 other
reviews as dev, cut to 256 or 512 tokens). Each workload's data is written once as JSONL
(``{"text", "pair", "label"}``) into a temporary folder, and every contender reads those files.

Contenders, each its own subprocess under ``/usr/bin/time -v``, one at a time:
``bertfit`` (``python -m bertfit train``), ``trainer-default`` and ``trainer-tuned`` (Hugging Face
``Trainer`` as in ``train_speed.py``), ``textbook`` (a plain Dive-into-Deep-Learning style loop),
``cross-encoder`` (sentence-transformers ``CrossEncoder.fit``, pair workloads only). The suite also
measures the machine's fp32/bf16 matmul peak (for the hardware-efficiency columns) and, unless
``--no-startup``, bertfit's start-up: command to first training step (cold and warm tokenisation
cache), ``bertfit predict`` and ``import bertfit``.

Results: ``benchmarks/results/suite-<date>.json`` (every run) and ``suite-<date>.md`` (the tables,
also printed); ``--quick`` writes ``suite-<date>-quick.*``. Reuses ``train_speed.py`` for the
Trainer set-up, child environment, busy-CPU checks and machine info.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import gzip
import itertools
import json
import math
import os
import random
import re
import shlex
import shutil
import statistics
import struct
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import read_speed  # noqa: E402  (benchmarks/ is not a package)
import train_speed  # noqa: E402

REPO_ROOT = train_speed.REPO_ROOT
RESULTS_DIR = train_speed.RESULTS_DIR
BATCH_SIZE, EPOCHS, SEED = train_speed.BATCH_SIZE, train_speed.EPOCHS, train_speed.SEED
TUNED_LR = 1e-4  # trainer-tuned, textbook and cross-encoder; bertfit keeps its own default
CONTENDERS = ("bertfit", "trainer-tuned", "trainer-default", "textbook", "cross-encoder")
SLOW_CONTENDERS = ("trainer-default", "textbook")  # fp32 and padded: trained on --slow-limit rows
PAIR_ONLY_CONTENDERS = ("cross-encoder",)
WORKER_NAMES = ("peak", "trainer-tuned", "trainer-default", "textbook", "cross-encoder")
TIME_BIN = Path("/usr/bin/time")
SEED_GPU_REFERENCE = "10,588 training examples/s on two GPUs (the seed system's small BERT)"
PREDICT_TEXT = "a fine film"
SQUARE_SIZES = (512, 1024, 2048)
STEP_SHAPE = (426, 384, 1536)  # about one batch of tokens times the encoder's FFN matrix
EMBEDDING_WEIGHTS = ("word_embeddings", "position_embeddings", "token_type_embeddings")
IMDB_MEMBER = re.compile(r"^aclImdb/train/(pos|neg)/\d+_\d+\.txt$")

# Trainer settings train_speed.training_args reads: trainer-tuned's learning rate and precision.
TRAINER_SETTINGS = argparse.Namespace(lr=TUNED_LR, tuned_precision="bf16")


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    max_length: int
    num_labels: int
    pair: bool
    slow_limit: int  # default training rows for the slow contenders


WORKLOADS = {
    w.name: w
    for w in (
        Workload("sst2", 128, 2, pair=False, slow_limit=2000),
        Workload("snli", 128, 3, pair=True, slow_limit=2000),
        Workload("imdb256", 256, 2, pair=False, slow_limit=300),
        Workload("imdb512", 512, 2, pair=False, slow_limit=300),
    )
}


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much data and how many repetitions each part uses; ``--quick`` shrinks them all."""

    sst2_train: int = 8000
    train_rows: int | None = None  # cap on every workload's training rows (None: as designed)
    dev_rows: int | None = None  # cap on every workload's dev rows
    imdb_train: int = 1000
    imdb_dev: int = 500
    slow_limit: int | None = None  # None: each workload's own default
    startup_sst2_rows: int | None = None  # None: the whole SST-2 training file (67,349 rows)
    startup_snli_rows: int = 550_152  # the size of SNLI's training split
    peak_seconds: float = 1.5
    warm_runs: int = 2
    predict_runs: int = 3
    import_runs: int = 5


FULL = Sizes()
QUICK = Sizes(
    sst2_train=64,
    train_rows=64,
    dev_rows=32,
    imdb_train=32,
    imdb_dev=32,
    slow_limit=32,
    startup_sst2_rows=2000,
    startup_snli_rows=2000,
    peak_seconds=0.2,
    warm_runs=1,
    predict_runs=1,
    import_runs=2,
)


@dataclasses.dataclass
class Prepared:
    """One workload's data as written for the contenders, plus what the parent derives from it."""

    workload: Workload
    train_path: Path
    dev_path: Path
    n_train: int
    n_dev: int
    token_lengths: list[int]  # real tokens of each training row, in file order


@dataclasses.dataclass(frozen=True)
class ModelFacts:
    non_embedding_params: int
    layers: int
    hidden: int

    def example_flops(self, tokens: int) -> float:
        """Training FLOPs of one example of ``tokens`` real tokens (forward + backward)."""
        return tokens * (6 * self.non_embedding_params + 12 * self.layers * tokens * self.hidden)


# --------------------------------------------------------------------------- arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="bertfit's whole speed suite (see the module doc and benchmarks/README.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated subset")
    p.add_argument("--contenders", default=",".join(CONTENDERS), help="comma-separated subset")
    p.add_argument("--repeats", type=int, default=1, help="rounds; the table shows medians")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads per child")
    p.add_argument(
        "--slow-limit",
        type=int,
        default=None,
        help="training rows for trainer-default and textbook "
        "(default: 2000 for sst2/snli, 300 for imdb; 32 with --quick)",
    )
    p.add_argument("--data-root", type=Path, default=train_speed.default_data_root())
    p.add_argument("--bertfit-cmd", default=f"{sys.executable} -m bertfit", help="bertfit command")
    p.add_argument(
        "--bertfit-extra-args", default="", help="extra arguments appended to `bertfit train`"
    )
    p.add_argument(
        "--startup",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure start-up times",
    )
    p.add_argument("--quick", action="store_true", help="tiny smoke-test sizes")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--keep-work", action="store_true", help="keep the temporary work folder")
    # worker side (the parent re-invokes this script)
    p.add_argument("--_worker", choices=WORKER_NAMES, default=None, help=argparse.SUPPRESS)
    p.add_argument("--_workload", choices=tuple(WORKLOADS), default=None, help=argparse.SUPPRESS)
    p.add_argument("--_result-file", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--_train", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--_dev", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--_limit", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--_seconds", type=float, default=1.5, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.workloads = split_choices(p, "workload", args.workloads, WORKLOADS)
    args.contenders = split_choices(p, "contender", args.contenders, CONTENDERS)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    return args


def split_choices(
    parser: argparse.ArgumentParser, what: str, text: str, known: Iterable[str]
) -> list[str]:
    chosen = [c.strip() for c in text.split(",") if c.strip()]
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        parser.error(f"unknown {what}(s): {', '.join(unknown)} (known: {', '.join(known)})")
    return chosen


def slow_limit_for(workload: Workload, args: argparse.Namespace, sizes: Sizes) -> int:
    if args.slow_limit is not None:
        return args.slow_limit
    return sizes.slow_limit if sizes.slow_limit is not None else workload.slow_limit


# --------------------------------------------------------------------------- data


def read_tsv_records(path: Path, limit: int | None = None) -> list[dict[str, str]]:
    """Rows of a TSV with a header (optionally gzipped), read GLUE's way: no quoting."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        return list(itertools.islice(reader, limit))


def capped(rows: list[dict], limit: int | None) -> list[dict]:
    return rows if limit is None else rows[:limit]


def sst2_rows(root: Path, sizes: Sizes) -> tuple[list[dict], list[dict]]:
    folder = root / train_speed.SST2_SUBDIR
    train = read_tsv_records(folder / "train.tsv.gz", sizes.sst2_train)
    dev = read_tsv_records(folder / "dev.tsv", sizes.dev_rows)
    as_row = lambda r: {"text": r["sentence"], "label": int(r["label"])}  # noqa: E731
    return [as_row(r) for r in train], [as_row(r) for r in dev]


def snli_rows(root: Path, sizes: Sizes) -> tuple[list[dict], list[dict]]:
    """SNLI validation (9,842 gold-labelled pairs), shuffled by seed, 10% held out as dev."""
    records = read_tsv_records(root / "snli" / "validation.tsv")
    rows = [
        {"text": r["premise"], "pair": r["hypothesis"], "label": int(r["label"])} for r in records
    ]
    random.Random(SEED).shuffle(rows)
    n_dev = round(len(rows) * 0.1)
    return capped(rows[n_dev:], sizes.train_rows), capped(rows[:n_dev], sizes.dev_rows)


def imdb_rows(root: Path, sizes: Sizes) -> tuple[list[dict], list[dict]]:
    """A seeded, balanced sample of IMDb training reviews: ``imdb_train`` to train on and
    ``imdb_dev`` others as dev, read from the archive without unpacking the rest."""
    rng = random.Random(SEED)
    with tarfile.open(root / "imdb" / "aclImdb_train.tar.gz", "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and IMDB_MEMBER.match(m.name)]
        picks: dict[str, tuple[str, int]] = {}  # member name -> (split, label)
        for label, folder in ((0, "neg"), (1, "pos")):
            names = sorted(m.name for m in members if f"/{folder}/" in m.name)
            n_train, n_dev = sizes.imdb_train // 2, sizes.imdb_dev // 2
            chosen = rng.sample(names, n_train + n_dev)
            picks.update({name: ("train", label) for name in chosen[:n_train]})
            picks.update({name: ("dev", label) for name in chosen[n_train:]})
        # in archive order, so the gzip stream is read forwards once
        splits: dict[str, list[dict]] = {"train": [], "dev": []}
        for member in members:
            if member.name in picks:
                split, label = picks[member.name]
                text = tar.extractfile(member).read().decode("utf-8")
                splits[split].append({"text": text, "label": label})
    for rows in splits.values():  # mixed labels, so a --slow-limit prefix holds both classes
        rng.shuffle(rows)
    return splits["train"], splits["dev"]


DATA_READERS: dict[str, Callable[[Path, Sizes], tuple[list[dict], list[dict]]]] = {
    "sst2": sst2_rows,
    "snli": snli_rows,
    "imdb256": imdb_rows,
    "imdb512": imdb_rows,
}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def read_jsonl(path: Path, limit: int | None = None) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in itertools.islice(f, limit)]


def real_token_lengths(tokenizer: Any, rows: list[dict], workload: Workload) -> list[int]:
    """Tokens per row after truncation, special tokens included, no padding."""
    texts = [r["text"] for r in rows]
    pairs = [r["pair"] for r in rows] if workload.pair else None
    enc = tokenizer(texts, pairs, truncation=True, max_length=workload.max_length)
    return [len(ids) for ids in enc["input_ids"]]


def prepare_workloads(
    names: list[str], root: Path, sizes: Sizes, folder: Path
) -> tuple[dict[str, Prepared], dict[str, str]]:
    """Write each workload's train/dev JSONL; return them and, per unusable workload, why."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(train_speed.model_path())
    prepared, missing = {}, {}
    loaded: dict[Callable, tuple[list[dict], list[dict]]] = {}  # imdb256/512 share one sample
    for name in names:
        workload, reader = WORKLOADS[name], DATA_READERS[name]
        try:
            if reader not in loaded:
                loaded[reader] = reader(root, sizes)
        except (OSError, tarfile.TarError, KeyError, ValueError) as exc:
            missing[name] = f"data not readable under {root}: {exc}"
            print(f"WARNING: workload {name} skipped: {missing[name]}", flush=True)
            continue
        train, dev = loaded[reader]
        train_path, dev_path = folder / f"{name}-train.jsonl", folder / f"{name}-dev.jsonl"
        write_jsonl(train_path, train)
        write_jsonl(dev_path, dev)
        lengths = real_token_lengths(tokenizer, train, workload)
        prepared[name] = Prepared(workload, train_path, dev_path, len(train), len(dev), lengths)
        print(f"workload {name}: {len(train)} train / {len(dev)} dev rows", flush=True)
    return prepared, missing


# --------------------------------------------------------------------------- model facts


def safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor shapes from a .safetensors header (8-byte length, then JSON), no weights loaded."""
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}


def model_facts(folder: Path) -> ModelFacts:
    """The encoder's non-embedding parameters (what each token passes through), layers, width.

    The pooler is left out too: it runs once per example, not once per token."""
    config = json.loads((folder / "config.json").read_text())
    shapes = safetensors_shapes(folder / "model.safetensors")
    per_token = sum(
        math.prod(shape)
        for key, shape in shapes.items()
        if not any(part in key for part in (*EMBEDDING_WEIGHTS, "pooler."))
    )
    return ModelFacts(per_token, config["num_hidden_layers"], config["hidden_size"])


# --------------------------------------------------------------------------- workers


def encode_features(tokenizer: Any, rows: list[dict], workload: Workload, pad: bool) -> list[dict]:
    """Tokenise rows into feature dicts (a map-style dataset ``Trainer`` accepts)."""
    texts = [r["text"] for r in rows]
    pairs = [r["pair"] for r in rows] if workload.pair else None
    padding = {"padding": "max_length"} if pad else {}
    enc = tokenizer(texts, pairs, truncation=True, max_length=workload.max_length, **padding)
    keys = list(enc.keys())
    return [{**{k: enc[k][i] for k in keys}, "labels": r["label"]} for i, r in enumerate(rows)]


def run_trainer_worker(name: str, workload: Workload, train_rows: list, dev_rows: list) -> dict:
    """``Trainer`` as trainer-default or trainer-tuned (settings from train_speed.py)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

    set_seed(SEED)
    path = train_speed.model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=workload.num_labels)
    pad = name == "trainer-default"  # run_glue.py pads at tokenisation by default
    train = encode_features(tokenizer, train_rows, workload, pad)
    dev = encode_features(tokenizer, dev_rows, workload, pad)
    with tempfile.TemporaryDirectory(prefix=f"{name}-") as out:
        trainer = train_speed.make_trainer(
            name, TRAINER_SETTINGS, model, tokenizer, train, dev, out
        )
        train_result = trainer.train()
        eval_metrics = trainer.evaluate()
    metrics = train_result.metrics
    return {
        "train_examples": len(train),
        "train_seconds": metrics["train_runtime"],
        "train_examples_per_second": metrics["train_samples_per_second"],
        "dev_accuracy": eval_metrics["eval_accuracy"],
        "precision": "bf16" if trainer.args.bf16 else "fp32",
        "device": str(trainer.args.device),
        "learning_rate": trainer.args.learning_rate,
        "train_loss": train_result.training_loss,
    }


def padded_tensors(tokenizer: Any, rows: list[dict], workload: Workload) -> Any:
    """A TensorDataset of (input_ids, attention_mask, token_type_ids, labels), padded to
    max_length the way the textbook does it."""
    import torch
    from torch.utils.data import TensorDataset

    texts = [r["text"] for r in rows]
    pairs = [r["pair"] for r in rows] if workload.pair else None
    enc = tokenizer(
        texts,
        pairs,
        truncation=True,
        max_length=workload.max_length,
        padding="max_length",
        return_tensors="pt",
        return_token_type_ids=True,
    )
    labels = torch.tensor([r["label"] for r in rows])
    return TensorDataset(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], labels)


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_textbook_worker(workload: Workload, train_rows: list, dev_rows: list) -> dict:
    """The plain loop of a Dive-into-Deep-Learning style chapter: padded inputs, Adam, fp32."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(SEED)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    path = train_speed.model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=workload.num_labels
    ).to(device)
    train_set = padded_tensors(tokenizer, train_rows, workload)
    dev_set = padded_tensors(tokenizer, dev_rows, workload)
    loader = DataLoader(
        train_set,
        batch_size=BATCH_SIZE,
        shuffle=True,
        generator=torch.Generator().manual_seed(SEED),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=TUNED_LR)
    loss_fn = nn.CrossEntropyLoss()

    model.train()
    sync(device)
    started = time.perf_counter()
    for _epoch in range(EPOCHS):
        for input_ids, attention_mask, token_type_ids, labels in loader:
            optimizer.zero_grad()
            logits = model(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                token_type_ids=token_type_ids.to(device),
            ).logits
            loss = loss_fn(logits, labels.to(device))
            loss.backward()
            optimizer.step()
    sync(device)
    train_seconds = time.perf_counter() - started

    model.eval()
    right = 0
    with torch.no_grad():
        for input_ids, attention_mask, token_type_ids, labels in DataLoader(
            dev_set, batch_size=BATCH_SIZE
        ):
            logits = model(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                token_type_ids=token_type_ids.to(device),
            ).logits
            right += int((logits.argmax(dim=-1).cpu() == labels).sum())
    return {
        "train_examples": len(train_set),
        "train_seconds": train_seconds,
        "train_examples_per_second": len(train_set) * EPOCHS / train_seconds,
        "dev_accuracy": right / len(dev_set),
        "precision": "fp32",
        "device": str(device),
        "learning_rate": TUNED_LR,
    }


def record_train_runtimes() -> list[float]:
    """Make every ``CrossEncoderTrainer.train`` call append its ``train_runtime`` to the list
    returned: ``CrossEncoder.fit`` runs one but does not hand back its metrics."""
    from sentence_transformers.cross_encoder.trainer import CrossEncoderTrainer

    runtimes: list[float] = []
    original = CrossEncoderTrainer.train

    def train_and_record(self: Any, *args: Any, **kwargs: Any) -> Any:
        output = original(self, *args, **kwargs)
        runtimes.append(float(output.metrics["train_runtime"]))
        return output

    CrossEncoderTrainer.train = train_and_record
    return runtimes


def run_cross_encoder_worker(workload: Workload, train_rows: list, dev_rows: list) -> dict:
    """sentence-transformers' ``CrossEncoder.fit``, the API its users know (deprecated since
    v4 but still there; it drives ``CrossEncoderTrainer`` underneath)."""
    import numpy as np
    import torch
    from sentence_transformers import CrossEncoder, InputExample
    from torch.utils.data import DataLoader

    if not hasattr(CrossEncoder, "fit"):
        raise RuntimeError("this sentence-transformers has no CrossEncoder.fit")
    torch.manual_seed(SEED)
    model = CrossEncoder(
        train_speed.model_path(), num_labels=workload.num_labels, max_length=workload.max_length
    )
    examples = [InputExample(texts=[r["text"], r["pair"]], label=r["label"]) for r in train_rows]
    loader = DataLoader(examples, shuffle=True, batch_size=BATCH_SIZE)
    # fit's own default is 10,000 warm-up steps (more than one epoch has); sentence-transformers'
    # training examples use 10% of the steps, as bertfit and Trainer users would
    warmup = math.ceil(len(loader) * EPOCHS * 0.1)
    runtimes = record_train_runtimes()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cross-encoder-") as tmp:
        os.chdir(tmp)  # fit() puts its checkpoints/ folder under the current directory
        model.fit(
            train_dataloader=loader,
            epochs=EPOCHS,
            warmup_steps=warmup,
            optimizer_params={"lr": TUNED_LR},
            show_progress_bar=False,
        )
        os.chdir(REPO_ROOT)
    fit_seconds = time.perf_counter() - started
    train_seconds = runtimes[-1] if runtimes else fit_seconds
    pairs = [(r["text"], r["pair"]) for r in dev_rows]
    logits = model.predict(pairs, batch_size=BATCH_SIZE, show_progress_bar=False)
    predicted = np.asarray(logits).argmax(axis=-1)
    labels = np.asarray([r["label"] for r in dev_rows])
    return {
        "train_examples": len(examples),
        "train_seconds": train_seconds,
        "train_examples_per_second": len(examples) * EPOCHS / train_seconds,
        "fit_call_seconds": fit_seconds,
        "dev_accuracy": float((predicted == labels).mean()),
        "precision": "fp32",  # fit's use_amp defaults to False
        "device": str(model.device),
        "learning_rate": TUNED_LR,
        "warmup_steps": warmup,
    }


def matmul_gflops(m: int, k: int, n: int, dtype: Any, device: Any, seconds: float) -> float:
    """GFLOP/s of ``(m x k) @ (k x n)`` in ``dtype``, repeated for about ``seconds``."""
    import torch

    a = torch.randn(m, k, device=device).to(dtype)
    b = torch.randn(k, n, device=device).to(dtype)
    out = torch.empty(m, n, device=device, dtype=dtype)
    torch.matmul(a, b, out=out)  # warm-up: kernel choice, first-touch memory
    sync(device)
    started = time.perf_counter()
    torch.matmul(a, b, out=out)
    sync(device)
    once = max(time.perf_counter() - started, 1e-7)
    reps = max(3, min(1_000_000, int(seconds / once)))
    started = time.perf_counter()
    for _ in range(reps):
        torch.matmul(a, b, out=out)
    sync(device)
    elapsed = time.perf_counter() - started
    return 2.0 * m * k * n * reps / elapsed / 1e9


def run_peak_worker(seconds: float) -> dict:
    """The best square-matmul GFLOP/s per dtype (the 'peak') and one step-shaped product."""
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result: dict[str, Any] = {"device": str(device), "seconds_per_shape": seconds}
    for label, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        square = {n: matmul_gflops(n, n, n, dtype, device, seconds) for n in SQUARE_SIZES}
        result[label] = {
            "square_gflops": square,
            "peak_gflops": max(square.values()),
            "step_shaped_gflops": matmul_gflops(*STEP_SHAPE, dtype, device, seconds),
        }
    return result


def worker_result(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    if args._worker == "peak":
        return run_peak_worker(args._seconds)
    workload = WORKLOADS[args._workload]
    train_rows, dev_rows = read_jsonl(args._train, args._limit), read_jsonl(args._dev)
    if args._worker == "textbook":
        result = run_textbook_worker(workload, train_rows, dev_rows)
    elif args._worker == "cross-encoder":
        result = run_cross_encoder_worker(workload, train_rows, dev_rows)
    else:
        result = run_trainer_worker(args._worker, workload, train_rows, dev_rows)
    return {**result, "torch_threads": torch.get_num_threads()}


def run_worker(args: argparse.Namespace) -> int:
    """Worker side: measure, and write the result (or why it failed) to --_result-file."""
    try:
        result = {"status": "ok", **worker_result(args)}
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        args._result_file.write_text(json.dumps({"status": "failed", "reason": reason}))
        raise
    args._result_file.write_text(json.dumps(result, indent=2))
    return 0


# --------------------------------------------------------------------------- parent: running


def time_report(path: Path) -> dict[str, float]:
    """Whole-process wall time and peak RSS from a ``/usr/bin/time -v`` report."""
    text = path.read_text(errors="replace") if path.exists() else ""
    found: dict[str, float] = {}
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if rss:
        found["peak_rss_mb"] = int(rss.group(1)) / 1024
    clock = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    if clock:
        parts = [float(x) for x in clock.group(1).split(":")]
        found["time_wall_s"] = sum(value * 60**i for i, value in enumerate(reversed(parts)))
    return found


def run_measured(cmd: list[str], env: dict[str, str], scratch: Path) -> tuple[int, dict]:
    """Run ``cmd`` under ``/usr/bin/time -v`` (when there is one); return its exit code and
    timing: train_speed's wall time and other-process load, plus peak RSS and time's wall."""
    report = scratch / "time-v.txt"
    report.unlink(missing_ok=True)
    timed = TIME_BIN.exists()
    wrapped = [str(TIME_BIN), "-v", "-o", str(report), *cmd] if timed else cmd
    rc, timing = train_speed.run_timed(wrapped, env)
    if timed:
        timing.update(time_report(report))
    timing["job_wall_s"] = timing.get("time_wall_s", timing["wall_s"])
    return rc, timing


def worker_command(name: str, prepared: Prepared, args: argparse.Namespace, out: Path) -> list:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_worker", name]
    cmd += ["--_workload", prepared.workload.name, "--_result-file", str(out)]
    cmd += ["--_train", str(prepared.train_path), "--_dev", str(prepared.dev_path)]
    cmd += ["--threads", str(args.threads)]
    return cmd


def run_worker_contender(
    name: str, prepared: Prepared, args: argparse.Namespace, limit: int | None, scratch: Path
) -> dict:
    result_file = scratch / f"{name}-result.json"
    result_file.unlink(missing_ok=True)
    cmd = worker_command(name, prepared, args, result_file)
    if limit is not None:
        cmd += ["--_limit", str(limit)]
    rc, timing = run_measured(cmd, train_speed.child_env(args), scratch)
    if not result_file.exists():
        return {"status": "failed", "reason": f"worker exited with code {rc}", **timing}
    result = json.loads(result_file.read_text())
    if rc != 0 and result.get("status") == "ok":
        result = {"status": "failed", "reason": f"worker exited with code {rc}"}
    return {**result, **timing}


def bertfit_train_command(prepared: Prepared, args: argparse.Namespace, out: Path, cache: Path):
    w = prepared.workload
    cmd = shlex.split(args.bertfit_cmd) + ["train", "--train", str(prepared.train_path)]
    cmd += ["--dev", str(prepared.dev_path), "--text-column", "text", "--label-column", "label"]
    if w.pair:
        cmd += ["--pair-column", "pair"]
    cmd += ["--epochs", str(EPOCHS), "--batch-size", str(BATCH_SIZE)]
    cmd += ["--max-length", str(w.max_length), "--output", str(out), "--overwrite"]
    # a fresh tokenisation cache per run: every other contender tokenises each time too
    cmd += ["--no-progress", "--seed", str(SEED), "--cache-dir", str(cache)]
    return cmd + shlex.split(args.bertfit_extra_args)


def run_bertfit_contender(
    prepared: Prepared, args: argparse.Namespace, out: Path, scratch: Path
) -> dict:
    cache = scratch / "bertfit-cache"
    shutil.rmtree(cache, ignore_errors=True)
    cmd = bertfit_train_command(prepared, args, out, cache)
    rc, timing = run_measured(cmd, train_speed.child_env(args), scratch)
    shutil.rmtree(cache, ignore_errors=True)
    results_path = out / "results.json"
    if rc != 0 or not results_path.exists():
        missing = "" if results_path.exists() else "; no results.json"
        return {
            "status": "failed",
            "reason": f"bertfit train exited with code {rc}{missing}",
            **timing,
        }
    raw = json.loads(results_path.read_text())
    try:
        result = {
            "status": "ok",
            "train_examples": int(raw["train_examples"]),
            "train_seconds": float(raw["train_seconds"]),
            "train_examples_per_second": float(raw["train_examples_per_second"]),
            "dev_accuracy": float(raw["dev"]["accuracy"]),
            "precision": raw.get("precision"),
            "device": raw.get("device"),
        }
    except (KeyError, TypeError, ValueError) as exc:
        return {"status": "failed", "reason": f"results.json lacks {exc}", **timing}
    return {**result, **timing, "bertfit_results": raw}


@dataclasses.dataclass
class Context:
    """What every contender run shares: arguments, sizes, the work folder, preflight answers."""

    args: argparse.Namespace
    sizes: Sizes
    work: Path
    bertfit_problem: str | None
    kept_sst2_run: Path | None = None


def run_contender(name: str, prepared: Prepared, ctx: Context, round_no: int) -> dict:
    w = prepared.workload
    limit = slow_limit_for(w, ctx.args, ctx.sizes) if name in SLOW_CONTENDERS else None
    rows = prepared.n_train if limit is None else min(limit, prepared.n_train)
    print(f"\n=== round {round_no}: {w.name} / {name} ({rows} train rows) ===", flush=True)
    scratch = ctx.work / "scratch"
    scratch.mkdir(exist_ok=True)
    if name != "bertfit":
        return run_worker_contender(name, prepared, ctx.args, limit, scratch)
    if ctx.bertfit_problem:
        return {"status": "skipped", "reason": ctx.bertfit_problem}
    out = ctx.work / "runs" / f"{w.name}-bertfit-r{round_no}"
    result = run_bertfit_contender(prepared, ctx.args, out, scratch)
    if w.name == "sst2" and result["status"] == "ok":  # kept for the predict start-up
        if ctx.kept_sst2_run is not None:
            shutil.rmtree(ctx.kept_sst2_run, ignore_errors=True)
        ctx.kept_sst2_run = out
    else:
        shutil.rmtree(out, ignore_errors=True)
    return result


def applies(name: str, workload: Workload) -> bool:
    return workload.pair or name not in PAIR_ONLY_CONTENDERS


def run_training_rounds(
    prepared: dict[str, Prepared], missing: dict[str, str], ctx: Context
) -> list[dict]:
    """for round: for workload: for contender: run, one at a time; every run is kept."""
    runs = []
    for round_no in range(1, ctx.args.repeats + 1):
        for wname in ctx.args.workloads:
            for name in ctx.args.contenders:
                if not applies(name, WORKLOADS[wname]):
                    continue
                if wname in missing:
                    result = {"status": "skipped", "reason": missing[wname]}
                else:
                    result = run_contender(name, prepared[wname], ctx, round_no)
                run = {"round": round_no, "workload": wname, "contender": name, **result}
                runs.append(run)
                print(f"--> {describe_run(run)}", flush=True)
    return runs


def describe_run(run: dict) -> str:
    head = f"{run['workload']}/{run['contender']}"
    if run["status"] != "ok":
        return f"{head}: {run['status']}: {run.get('reason', '')}"
    return (
        f"{head}: {run['train_examples_per_second']:.1f} examples/s, "
        f"dev acc {run['dev_accuracy']:.4f}, wall {run['job_wall_s']:.1f} s"
    )


def measure_peaks(args: argparse.Namespace, sizes: Sizes, work: Path) -> dict:
    print("\n=== matmul peaks ===", flush=True)
    scratch = work / "scratch"
    scratch.mkdir(exist_ok=True)
    result_file = scratch / "peak-result.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_worker", "peak"]
    cmd += ["--_result-file", str(result_file), "--threads", str(args.threads)]
    cmd += ["--_seconds", str(sizes.peak_seconds)]
    rc, timing = train_speed.run_timed(cmd, train_speed.child_env(args))
    if rc != 0 or not result_file.exists():
        return {"status": "failed", "reason": f"peak worker exited with code {rc}", **timing}
    peaks = json.loads(result_file.read_text())
    for dtype in ("fp32", "bf16"):
        if dtype in peaks:
            p = peaks[dtype]
            print(f"{dtype}: peak {p['peak_gflops']:.0f} GFLOP/s, step-shaped "
                  f"{p['step_shaped_gflops']:.0f} GFLOP/s")  # fmt: skip
    return {**peaks, **timing}


# --------------------------------------------------------------------------- parent: start-up


def first_step_seconds(train_args: list[str], ctx: Context, label: str) -> dict:
    """Seconds from spawning ``_first_step.py`` to bertfit's first training step."""
    scratch = ctx.work / "scratch"
    result_file = scratch / "first-step.txt"
    result_file.unlink(missing_ok=True)
    cmd = [sys.executable, str(BENCH_DIR / "_first_step.py"), str(result_file), "--", *train_args]
    print(f"\n=== start-up: {label} ===", flush=True)
    spawned = time.time()  # wall clock, as the driver writes it
    rc, timing = train_speed.run_timed(cmd, train_speed.child_env(ctx.args))
    if not result_file.exists():
        return {"status": "failed", "reason": f"no first step (exit code {rc})", **timing}
    return {"status": "ok", "seconds": float(result_file.read_text()) - spawned, **timing}


def startup_train_args(kind: str, train_file: Path, ctx: Context, cache: Path) -> list[str]:
    """`bertfit train` arguments for the start-up runs: SST-2's TSV or the SNLI-sized JSONL."""
    root = ctx.args.data_root / train_speed.SST2_SUBDIR
    if kind == "sst2":
        cmd = ["train", "--train", str(train_file), "--dev", str(root / "dev.tsv")]
        cmd += ["--text-column", "sentence", "--label-column", "label"]
        if ctx.sizes.startup_sst2_rows is not None:
            cmd += ["--train-limit", str(ctx.sizes.startup_sst2_rows)]
    else:  # dev: bertfit's default stratified hold-out; rows labelled '-' are dropped
        cmd = ["train", "--train", str(train_file), "--text-column", "sentence1"]
        cmd += ["--pair-column", "sentence2", "--label-column", "gold_label", "--skip-bad-rows"]
    cmd += ["--epochs", str(EPOCHS), "--batch-size", str(BATCH_SIZE), "--seed", str(SEED)]
    cmd += ["--output", str(ctx.work / "startup-run"), "--overwrite", "--no-progress"]
    cmd += ["--cache-dir", str(cache)]
    return cmd + shlex.split(ctx.args.bertfit_extra_args)


def cold_and_warm(kind: str, train_file: Path, rows: int, ctx: Context) -> list[dict]:
    """First-step time with an empty tokenisation cache, then again with it filled."""
    cache = ctx.work / f"startup-cache-{kind}"
    shutil.rmtree(cache, ignore_errors=True)
    train_args = startup_train_args(kind, train_file, ctx, cache)
    what = f"command to first training step, {kind.upper()} ({rows:,} rows)"
    cold = first_step_seconds(train_args, ctx, f"{kind} cold")
    warm = [first_step_seconds(train_args, ctx, f"{kind} warm") for _ in range(ctx.sizes.warm_runs)]
    shutil.rmtree(cache, ignore_errors=True)
    return [
        summarise_repeats(f"{what}, cold cache", [cold], "empty --cache-dir"),
        summarise_repeats(f"{what}, warm cache", warm, "same --cache-dir: tokenisation cache hit"),
    ]


def summarise_repeats(what: str, runs: list[dict], note: str = "") -> dict:
    ok = [r["seconds"] for r in runs if r["status"] == "ok"]
    failed = [r.get("reason", "") for r in runs if r["status"] != "ok"]
    row = {"what": what, "runs": runs, "note": note, "n_ok": len(ok)}
    row["median_s"] = statistics.median(ok) if ok else None
    if failed:
        row["note"] = "; ".join(filter(None, [note, f"failed: {failed[0]}"]))
    return row


def wall_runs(cmd: list[str], count: int, ctx: Context, label: str) -> list[dict]:
    runs = []
    for _ in range(count):
        print(f"\n=== start-up: {label} ===", flush=True)
        rc, timing = train_speed.run_timed(cmd, train_speed.child_env(ctx.args))
        status = "ok" if rc == 0 else "failed"
        runs.append({"status": status, "seconds": timing["wall_s"], "rc": rc, **timing})
        if rc != 0:
            runs[-1]["reason"] = f"exit code {rc}"
    return runs


def predict_run_dir(ctx: Context) -> tuple[Path | None, str]:
    """The kept sst2 bertfit run, or a quick one trained now (64 rows) when there is none."""
    if ctx.kept_sst2_run is not None:
        return ctx.kept_sst2_run, "the sst2 bertfit run"
    if ctx.bertfit_problem:
        return None, ctx.bertfit_problem
    out = ctx.work / "predict-run"
    root = ctx.args.data_root / train_speed.SST2_SUBDIR
    cmd = shlex.split(ctx.args.bertfit_cmd) + ["train", "--train", str(root / "train.tsv.gz")]
    cmd += ["--dev", str(root / "dev.tsv"), "--text-column", "sentence", "--label-column"]
    cmd += ["label", "--train-limit", "64", "--epochs", "1", "--output", str(out)]
    cmd += ["--overwrite", "--no-progress", "--cache-dir", str(ctx.work / "predict-cache")]
    print("\n=== start-up: a 64-row SST-2 run to predict with ===", flush=True)
    rc, _ = train_speed.run_timed(cmd, train_speed.child_env(ctx.args))
    if rc != 0:
        return None, f"training the 64-row run failed (exit code {rc})"
    return out, "a 64-row SST-2 run trained for this"


def run_startup(ctx: Context) -> list[dict]:
    """The start-up table: first step cold/warm (SST-2, SNLI-sized), predict, imports."""
    rows: list[dict] = []
    sst2_train = ctx.args.data_root / train_speed.SST2_SUBDIR / "train.tsv.gz"
    if sst2_train.exists():
        n_sst2 = ctx.sizes.startup_sst2_rows or 67_349
        rows += cold_and_warm("sst2", sst2_train, n_sst2, ctx)
    else:
        rows.append({"what": "first training step, SST-2", "median_s": None, "runs": [],
                     "note": f"skipped: {sst2_train} not found"})  # fmt: skip
    n_snli = ctx.sizes.startup_snli_rows
    snli_folder = ctx.work / "snli-startup"
    shutil.rmtree(snli_folder, ignore_errors=True)
    print(f"\nwriting {n_snli:,} SNLI-shaped pairs (benchmarks/read_speed.py) ...", flush=True)
    snli_file = read_speed.write_snli(snli_folder, n_snli)
    rows += cold_and_warm("snli", snli_file, n_snli, ctx)
    shutil.rmtree(snli_folder, ignore_errors=True)
    shutil.rmtree(ctx.work / "startup-run", ignore_errors=True)

    run_dir, origin = predict_run_dir(ctx)
    what = f'`bertfit predict RUN --text "{PREDICT_TEXT}"`'
    if run_dir is None:
        rows.append({"what": what, "median_s": None, "runs": [], "note": f"skipped: {origin}"})
    else:
        cmd = shlex.split(ctx.args.bertfit_cmd) + ["predict", str(run_dir), "--text", PREDICT_TEXT]
        runs = wall_runs(cmd, ctx.sizes.predict_runs, ctx, "bertfit predict")
        rows.append(summarise_repeats(what, runs, f"RUN = {origin}; whole command"))
    for code in ("import bertfit", "pass"):
        runs = wall_runs([sys.executable, "-c", code], ctx.sizes.import_runs, ctx, code)
        rows.append(summarise_repeats(f'`python -c "{code}"`', runs, "whole command"))
    return rows


# --------------------------------------------------------------------------- summary


def derive_run_metrics(run: dict, prepared: Prepared, facts: ModelFacts, peaks: dict) -> None:
    """Add real tokens/s, achieved GFLOP/s and hardware efficiency to one ok run."""
    lengths = prepared.token_lengths[: run["train_examples"]]
    seconds = run["train_seconds"]
    flops = sum(facts.example_flops(n) for n in lengths) * EPOCHS
    run["real_tokens"] = sum(lengths)
    run["real_tokens_per_second"] = sum(lengths) * EPOCHS / seconds
    run["achieved_gflops"] = flops / seconds / 1e9
    for dtype in ("fp32", "bf16"):
        peak = peaks.get(dtype, {}).get("peak_gflops")
        run[f"efficiency_{dtype}_pct"] = 100 * run["achieved_gflops"] / peak if peak else None


MEDIAN_KEYS = (
    "train_examples_per_second",
    "real_tokens_per_second",
    "train_seconds",
    "job_wall_s",
    "peak_rss_mb",
    "dev_accuracy",
    "achieved_gflops",
    "efficiency_fp32_pct",
    "efficiency_bf16_pct",
)


def median_of(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def summarise(runs: list[dict], prepared: dict[str, Prepared], facts: ModelFacts, peaks: dict):
    """One row per (workload, contender): medians over the rounds, ratios against bertfit."""
    for run in runs:
        if run["status"] == "ok":
            derive_run_metrics(run, prepared[run["workload"]], facts, peaks)
    rows = []
    order = list(dict.fromkeys((r["workload"], r["contender"]) for r in runs))  # the suite's order
    for wname, name in order:
        group = [r for r in runs if r["workload"] == wname and r["contender"] == name]
        ok = [r for r in group if r["status"] == "ok"]
        row: dict[str, Any] = {"workload": wname, "contender": name, "runs": len(group)}
        row["ok_runs"] = len(ok)
        if not ok:
            row.update(status=group[-1]["status"], reason=group[-1].get("reason", ""))
            rows.append(row)
            continue
        row["status"] = "ok"
        row.update({key: median_of(ok, key) for key in MEDIAN_KEYS})
        row["train_examples"] = ok[0]["train_examples"]
        row["limited"] = ok[0]["train_examples"] < prepared[wname].n_train
        row["precision"] = ok[0].get("precision")
        row["device"] = ok[0].get("device")
        rows.append(row)
    add_ratios(rows)
    return rows


def add_ratios(rows: list[dict]) -> None:
    """bertfit examples/s over the contender's, and the contender's job wall over bertfit's."""
    ours = {r["workload"]: r for r in rows if r["contender"] == "bertfit" and r["status"] == "ok"}
    for row in rows:
        mine = ours.get(row["workload"])
        ok = row["status"] == "ok" and mine is not None
        row["speed_ratio"] = (
            mine["train_examples_per_second"] / row["train_examples_per_second"] if ok else None
        )
        row["wall_ratio"] = row["job_wall_s"] / mine["job_wall_s"] if ok else None


# --------------------------------------------------------------------------- report


def num(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "-" if value is None else f"{value:,.{digits}f}{suffix}"


TRAIN_HEAD = (
    "workload",
    "contender",
    "rows",
    "examples/s",
    "real tokens/s",
    "wall s",
    "peak RSS MB",
    "dev acc",
    "precision",
    "bertfit x (ex/s)",
    "wall / bertfit",
    "HW eff fp32",
    "HW eff bf16",
)


def training_table_row(row: dict) -> list[str]:
    if row["status"] != "ok":
        return [row["workload"], row["contender"], f"{row['status']}: {row.get('reason', '')}"] + [
            ""
        ] * (len(TRAIN_HEAD) - 3)
    star = "*" if row["limited"] else ""
    return [
        row["workload"],
        row["contender"],
        f"{row['train_examples']:,}{star}",
        num(row["train_examples_per_second"]),
        num(row["real_tokens_per_second"], 0),
        num(row["job_wall_s"]),
        num(row["peak_rss_mb"], 0),
        num(row["dev_accuracy"], 4) + star,
        row["precision"] or "-",
        num(row["speed_ratio"], 2, "x"),
        num(row["wall_ratio"], 2, "x") + star,
        num(row["efficiency_fp32_pct"], 1, "%"),
        num(row["efficiency_bf16_pct"], 1, "%"),
    ]


def markdown_table(head: Iterable[str], rows: Iterable[list[str]]) -> list[str]:
    head = list(head)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def header_lines(payload: dict) -> list[str]:
    m, peaks, facts = payload["machine"], payload["peaks"], payload["model"]
    quick = " (QUICK smoke-test sizes: not comparable numbers)" if payload["quick"] else ""
    versions = ", ".join(f"{k} {v}" for k, v in payload["versions"].items())
    lines = [
        f"# bertfit speed suite, {payload['date']}{quick}",
        "",
        f"- started {payload['started']}, took {payload['elapsed_s'] / 60:.1f} min",
        f"- CPU: {m['cpu_model']}, {m['cpu_count']} cores; {payload['args']['threads']} threads "
        "per contender",
        f"- GPU: {m.get('gpu') or 'none'}",
        f"- {versions}; {m['platform']}",
    ]
    for dtype in ("fp32", "bf16"):
        p = peaks.get(dtype)
        if p:
            square = ", ".join(f"{n}: {v:.0f}" for n, v in p["square_gflops"].items())
            lines.append(
                f"- {dtype} matmul on {peaks['device']}: peak {p['peak_gflops']:.0f} GFLOP/s "
                f"(square {square}); step-shaped {'x'.join(map(str, STEP_SHAPE))}: "
                f"{p['step_shaped_gflops']:.0f} GFLOP/s"
            )
    if peaks.get("status") == "failed":
        lines.append(f"- matmul peaks not measured: {peaks.get('reason')}")
    lines.append(
        f"- model all-MiniLM-L6-v2: {facts['non_embedding_params'] / 1e6:.2f}M non-embedding "
        f"parameters, {facts['layers']} layers, hidden {facts['hidden']}; batch {BATCH_SIZE}, "
        f"{EPOCHS} epoch, seed {SEED}; {payload['args']['repeats']} round(s), medians shown"
    )
    if m.get("gpu"):
        lines.append(f"- GPU reference: {SEED_GPU_REFERENCE}")
    return lines


def workload_lines(payload: dict) -> list[str]:
    rows = []
    for name, w in payload["workloads"].items():
        if "reason" in w:
            rows.append([name, "-", "-", "-", "-", f"skipped: {w['reason']}"])
            continue
        rows.append(
            [name, f"{w['train']:,}", f"{w['dev']:,}", str(w["labels"]), str(w["max_length"]),
             f"{w['mean_real_tokens']:.1f}"]
        )  # fmt: skip
    head = ("workload", "train", "dev", "labels", "max_length", "mean real tokens")
    return ["## Workloads", "", *markdown_table(head, rows)]


def training_lines(payload: dict) -> list[str]:
    lines = [
        "## Training",
        "",
        *markdown_table(TRAIN_HEAD, map(training_table_row, payload["rows"])),
    ]
    lines += [
        "",
        "- rows: training examples; examples/s and real tokens/s count the training loop only "
        "(real tokens: non-padding tokens after truncation, special tokens included).",
        "- wall s and peak RSS: the whole process, from `/usr/bin/time -v` (load, tokenise, "
        "train, evaluate).",
        "- bertfit x (ex/s): bertfit's examples/s over this row's; wall / bertfit: this row's "
        "wall time over bertfit's.",
        "- HW eff: achieved model FLOP/s (n * (6P + 12 * layers * n * hidden) per example of n "
        "real tokens, over the training seconds) as a share of the fp32 and bf16 matmul peaks.",
        "- `*`: trained on the first --slow-limit rows only: its examples/s compares, its dev "
        "accuracy and wall time do not.",
        "- cross-encoder runs on pair workloads only.",
    ]
    return lines


def startup_lines(payload: dict) -> list[str]:
    if payload["startup"] is None:
        return []
    rows = [
        [r["what"], num(r["median_s"], 2), str(r.get("n_ok", 0)), r.get("note", "")]
        for r in payload["startup"]
    ]
    head = ("start-up", "median s", "runs", "notes")
    return ["## Start-up", "", *markdown_table(head, rows)]


def markdown_report(payload: dict) -> str:
    parts = [header_lines(payload), workload_lines(payload), training_lines(payload)]
    parts.append(startup_lines(payload))
    if payload["warnings"]:
        parts.append(["## Warnings", "", *(f"- {w}" for w in payload["warnings"])])
    return "\n\n".join("\n".join(p) for p in parts if p) + "\n"


def library_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for dist in ("bertfit", "torch", "transformers", "accelerate", "sentence-transformers"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def machine_with_gpu() -> dict[str, Any]:
    import torch

    info = train_speed.machine_info()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def collect_warnings(runs: list[dict], startup: list[dict] | None, peaks: dict) -> list[str]:
    """train_speed's busy-CPU warnings for every run (training, peaks, start-up)."""
    named = {f"{r['workload']}/{r['contender']} (round {r['round']})": r for r in runs}
    named["the matmul peak measurement"] = peaks
    for row in startup or []:
        for i, run in enumerate(row["runs"], 1):
            named[f"start-up: {row['what']} (run {i})"] = run
    return train_speed.busy_warnings(named)


def workload_summary(
    prepared: dict[str, Prepared], missing: dict[str, str], sizes: Sizes
) -> dict[str, dict]:
    summary: dict[str, dict] = {name: {"reason": reason} for name, reason in missing.items()}
    for name, p in prepared.items():
        w = p.workload
        summary[name] = {
            "train": p.n_train,
            "dev": p.n_dev,
            "labels": w.num_labels,
            "max_length": w.max_length,
            "pair": w.pair,
            "real_tokens": sum(p.token_lengths),
            "mean_real_tokens": sum(p.token_lengths) / max(1, p.n_train),
            "truncated_rows": sum(n >= w.max_length for n in p.token_lengths),
        }
    return summary


def write_reports(payload: dict, markdown: str, args: argparse.Namespace) -> tuple[Path, Path]:
    stem = f"suite-{payload['date']}" + ("-quick" if payload["quick"] else "")
    args.results_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = args.results_dir / f"{stem}.json", args.results_dir / f"{stem}.md"
    json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    md_path.write_text(markdown)
    return json_path, md_path


# --------------------------------------------------------------------------- main


def run_suite(args: argparse.Namespace) -> int:
    sizes = QUICK if args.quick else FULL
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the parent tokenises too
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    started_at, started = dt.datetime.now().astimezone(), time.perf_counter()
    load = train_speed.machine_load_now()
    warnings = []
    if load is not None and load > train_speed.BUSY_WARN_CORES:
        warnings.append(f"{load:.2f} cores were busy before the suite started")
        print(f"WARNING: {warnings[-1]}; timings will suffer", flush=True)
    machine = machine_with_gpu()
    if machine.get("gpu"):
        print(f"GPU: {machine['gpu']} (reference: {SEED_GPU_REFERENCE})", flush=True)

    work = Path(tempfile.mkdtemp(prefix="bertfit-suite-"))
    try:
        facts = model_facts(Path(train_speed.model_path()))
        peaks = measure_peaks(args, sizes, work)
        prepared, missing = prepare_workloads(args.workloads, args.data_root, sizes, work)
        problem = train_speed.bertfit_preflight(args) if "bertfit" in args.contenders else None
        ctx = Context(args, sizes, work, problem)
        runs = run_training_rounds(prepared, missing, ctx)
        startup = run_startup(ctx) if args.startup else None
    finally:
        if args.keep_work:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    payload = {
        "benchmark": "suite",
        "date": started_at.date().isoformat(),
        "started": started_at.isoformat(timespec="seconds"),
        "elapsed_s": time.perf_counter() - started,
        "quick": args.quick,
        "machine": machine,
        "versions": library_versions(),
        "args": {k: v for k, v in vars(args).items() if not k.startswith("_")},
        "sizes": dataclasses.asdict(sizes),
        "model": dataclasses.asdict(facts),
        "peaks": peaks,
        "workloads": workload_summary(prepared, missing, sizes),
        "rows": summarise(runs, prepared, facts, peaks),
        "runs": runs,
        "startup": startup,
        "load_before_start_cores": load,
        "warnings": warnings + collect_warnings(runs, startup, peaks),
    }
    markdown = markdown_report(payload)
    print("\n" + markdown)
    json_path, md_path = write_reports(payload, markdown, args)
    print(f"wrote {json_path}\nwrote {md_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_worker(args) if args._worker else run_suite(args)


if __name__ == "__main__":
    sys.exit(main())
