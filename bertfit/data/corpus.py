"""Finding a task's corpus and reading its splits.

``locate`` finds a corpus in ``--data-dir`` (an extracted folder in its canonical layout, or the
canonical archive), then in the cache, then downloads and verifies it. ``read_split`` turns one
split into ``Examples`` through the same readers as user files.

A corpus folder may also hold the Hugging Face Parquet export (``<folder>/hf_parquet/<split>/
0000.parquet``, HF's split names: ``validation`` for GLUE's ``dev``): a split without its
canonical file is read from there, its integer labels mapped onto the task's label names
(label -1, HF's mark of an unlabelled row, is left out).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
from pathlib import Path

from bertfit.data.examples import Columns, Examples
from bertfit.data.labels import MULTI, REGRESSION, SINGLE, is_int_text
from bertfit.data.parquet import class_label_names, read_parquet
from bertfit.data.readers import read_examples
from bertfit.data.records import ReadOptions
from bertfit.data.tasks import TASKS, Task
from bertfit.data.unpack import unpack, unpacked_at
from bertfit.errors import ConfigError, DataError

log = logging.getLogger("bertfit")
DATA_DIR_ENV = "BERTFIT_DATA_DIR"
OFFLINE_ENV = "BERTFIT_OFFLINE"
MIRROR = "hf_parquet"  # the folder of the Hugging Face Parquet export inside a corpus folder
UNLABELLED_ID = "-1"  # HF's label of a row published without one (GLUE's test sets)


def data_dirs(data_dir: str | None) -> list[Path]:
    """--data-dir, else $BERTFIT_DATA_DIR (which may list several folders, like PATH)."""
    given = data_dir or os.environ.get(DATA_DIR_ENV, "")
    return [Path(p).expanduser() for p in given.split(os.pathsep) if p]


def candidate_folders(task: Task, base: Path) -> list[Path]:
    """Where a mirror may hold the extracted corpus, in the order they are tried.

    ``base`` itself counts when the task's file names are its own (``SICK.txt``); generic names
    (GLUE's ``train.tsv``, IMDb's ``train/``) count only in a folder named after the corpus.
    """
    names = list(dict.fromkeys([task.folder, task.folder.lower(), task.name]))
    parents = [base, base / "glue", base / "glue_data"] if task.glue else [base]
    found = [parent / name for parent in parents for name in names]
    generic = task.glue or task.reader == "imdb"
    if not generic or base.name.lower() in {n.lower() for n in names}:
        found.append(base)
    return found


def existing(path: Path) -> Path | None:
    """``path``, or ``path.gz`` when only the compressed copy is there."""
    if path.exists():
        return path
    gz = path.with_name(path.name + ".gz")
    return gz if gz.is_file() else None


def hf_split(split: str) -> str:
    """A split's Hugging Face name: GLUE's ``dev`` (``dev_matched``) is ``validation``
    (``validation_matched``); other names are the same."""
    return "validation" + split.removeprefix("dev") if split.startswith("dev") else split


def mirror_folder(root: Path, split: str) -> Path | None:
    """``root/hf_parquet/<HF split name>`` when it holds Parquet shards."""
    folder = root / MIRROR / hf_split(split)
    return folder if folder.is_dir() and any(folder.glob("*.parquet")) else None


def split_file(task: Task, root: Path, split: str) -> Path | None:
    """The file (or IMDb folder, or Parquet export folder) of ``split`` inside the corpus folder
    ``root``, if present. HF's split names are accepted (``validation`` for ``dev``)."""
    name = task.split_name(split)
    if name not in task.splits:
        raise ConfigError(
            f"task {task.name} has no split {split!r}; its splits: {', '.join(task.splits)}"
        )
    path = existing(root / task.splits[name])
    if task.reader == "imdb":
        return path if path is not None and (path / "pos").is_dir() else None
    return path if path is not None else mirror_folder(root, name)


def is_mirror(path: Path) -> bool:
    """Whether ``split_file`` found a split in the Hugging Face Parquet export."""
    return path.parent.name == MIRROR and path.is_dir()


def found_splits(task: Task, root: Path) -> list[str]:
    """The splits present in ``root``, by the name they have there (``validation`` for a
    Parquet export's dev split)."""
    found = []
    for split in task.splits:
        path = split_file(task, root, split)
        if path is not None:
            found.append(path.name if is_mirror(path) else split)
    return found


def _holds_corpus(task: Task, folder: Path) -> bool:
    """A folder holds the corpus when the split used for training or evaluation is there."""
    wanted = ["train", task.dev_split or task.test_split]
    return folder.is_dir() and any(split_file(task, folder, s) is not None for s in wanted if s)


def locate(
    task: Task,
    data_dir: str | None = None,
    cache_dir: str | None = None,
    download: bool = True,
    progress: bool = True,
) -> Path:
    """The corpus folder: from --data-dir (folder or archive), else the cache, else downloaded.

    With neither a local copy nor a working download, one line says which file to put where.
    """
    import bertfit.data.download as dl

    bases = data_dirs(data_dir)
    for base in bases:
        for folder in candidate_folders(task, base):
            if _holds_corpus(task, folder):
                return folder
        local = [existing(base / d.filename) for d in task.downloads]
        if all(local):
            return _unpacked_corpus(task, local, cache_dir)
    cached = _cached_corpus(task, cache_dir)
    if cached is not None:
        return cached
    if not download or os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        raise DataError(_not_found(task, bases, "downloads are off"))
    files = []
    for item in task.downloads:
        target = dl.cache_root(cache_dir) / "downloads" / item.filename
        try:
            files.append(dl.download(item.url, target, item.sha256, progress=progress))
        except DataError as err:
            raise DataError(_not_found(task, bases, str(err))) from None
    return _unpacked_corpus(task, files, cache_dir)


def _cached_corpus(task: Task, cache_dir: str | None) -> Path | None:
    base = unpacked_at(task, cache_dir)
    return next((f for f in candidate_folders(task, base) if _holds_corpus(task, f)), None)


def _unpacked_corpus(task: Task, files: list[Path], cache_dir: str | None) -> Path:
    unpack(task, files, cache_dir)
    found = _cached_corpus(task, cache_dir)
    if found is None:
        raise DataError(
            f"{files[0]}: does not hold the expected {task.folder}/ files "
            f"({', '.join(task.splits.values())})"
        )
    return found


def _not_found(task: Task, bases: list[Path], reason: str) -> str:
    files = " and ".join(f"{d.filename} ({d.url})" for d in task.downloads)
    where = str(bases[0]) if bases else "a folder DIR"
    return (
        f"task {task.name}: no local copy and no download ({reason}); put {files}, or the "
        f"extracted {task.folder}/ folder, into {where} and pass --data-dir {bases[0] if bases else 'DIR'}"
    )


def read_split(
    task: Task,
    root: Path,
    split: str,
    *,
    limit: int | None = None,
    seed: int = 0,
    with_labels: bool = True,
) -> Examples:
    """One split of a located corpus as ``Examples``; grouped corpora come in a seeded shuffle.

    ``split`` is the task's name for it or Hugging Face's (``validation`` for ``dev``).
    """
    path = split_file(task, root, split)
    asked, split = split, task.split_name(split)
    if path is None:
        raise DataError(_no_split(task, root, split))
    if with_labels and not task.labelled(split):
        raise DataError(f"task {task.name}: the {split} split is published without labels")
    if task.reader == "imdb":
        examples = _read_review_folders(path, seed, limit)
    else:
        read = _read_mirror if is_mirror(path) else _read_table
        examples = read(task, path, split, None if task.grouped else limit, with_labels)
        if task.grouped:
            examples = _shuffled(examples, seed, limit)
    if with_labels and task.labels is not None:
        _check_task_labels(task, examples)
    log.info(f"{task.name} {asked}: {examples.describe()} ({path})")
    return examples


def _no_split(task: Task, root: Path, split: str) -> str:
    found = ", ".join(found_splits(task, root)) or "none"
    pick = "pick one with --train-split" if split == "train" else "pick another split"
    return (
        f"task {task.name}: no {split} split in {root} (expected {root / task.splits[split]}); "
        f"found: {found}; {pick}"
    )


def _options(task: Task, limit: int | None, with_labels: bool, drop_labels, where=None) -> dict:
    """The reader's keyword arguments for a task's split (bad rows are skipped and counted)."""
    return dict(
        with_labels=with_labels,
        limit=limit,
        skip_bad_rows=True,
        label_kind="score" if task.problem == REGRESSION else "single",
        drop_labels=drop_labels,
        where=where,
    )


def _read_table(task: Task, path: Path, split: str, limit, with_labels: bool) -> Examples:
    where = (task.split_column, task.split_values[split]) if task.split_column else None
    options = _options(task, limit, with_labels, task.drop_labels, where)
    if path.name.lower().removesuffix(".gz").endswith((".tsv", ".txt")):
        # as GLUE reads its TSV; NSMC, MRPC's test and SICK are TSV files named .txt
        options.update(delimiter="\t", quoting="none")
    return read_examples(path, Columns(task.text, task.pair, task.label), **options)


def _read_mirror(task: Task, folder: Path, split: str, limit, with_labels: bool) -> Examples:
    """A split of the Hugging Face Parquet export: all its shards, read as one file; label
    ids become the task's label names."""
    columns = Columns(*(task.hf_columns or (task.text, task.pair, task.label)))
    options = _options(task, limit, with_labels, (UNLABELLED_ID,))
    shards = sorted(folder.glob("*.parquet"))
    examples = read_parquet(shards, columns, ReadOptions(**options))
    if not with_labels or task.labels is None:
        return examples
    names = _id_names(task, shards[0], class_label_names(shards[0], columns.label))
    return _label_names_from_ids(task, examples, names)


def _id_names(task: Task, shard: Path, names: list[str] | None) -> tuple[str, ...]:
    """The task's label for each HF label id: the file's ClassLabel names when they are the
    task's labels (in whatever order), else the task's labels in their order (GLUE's 0/1
    tasks, whose HF names are words: WNLI's not_entailment, entailment)."""
    if names is None:
        return task.labels
    if len(names) != len(task.labels):
        raise DataError(
            f"{shard}: {len(names)} label names ({', '.join(names)}) but task {task.name} has "
            f"{len(task.labels)} ({', '.join(task.labels)}); is this the right export?"
        )
    return tuple(names) if set(names) == set(task.labels) else task.labels


def _label_names_from_ids(task: Task, examples: Examples, names: tuple[str, ...]) -> Examples:
    labels = []
    for label, row in zip(examples.labels, examples.lines):
        if not is_int_text(label) or not 0 <= int(label) < len(names):
            raise DataError(
                f"{examples.path}:{row}: label {label!r} is not a label id of task "
                f"{task.name} (0 to {len(names) - 1}: {', '.join(names)})"
            )
        labels.append(names[int(label)])
    return dataclasses.replace(examples, labels=labels, label_is_int=all(map(is_int_text, labels)))


def _shuffled(examples: Examples, seed: int, limit: int | None) -> Examples:
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    return examples.subset(order[:limit] if limit else order)


def _read_review_folders(folder: Path, seed: int, limit: int | None) -> Examples:
    """IMDb's layout: ``{pos,neg}/<id>_<rating>.txt``, one review per file, label by folder."""
    files = [
        (path, label) for label in ("neg", "pos") for path in sorted((folder / label).glob("*.txt"))
    ]
    random.Random(seed).shuffle(files)  # the folders are grouped by label: a fair sample needs this
    if limit:
        files = files[:limit]
    texts, labels, dropped = [], [], {}
    for path, label in files:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise DataError(f"{path}: bytes that are not UTF-8; save the file as UTF-8") from None
        text = text.replace("<br />", " ").strip()  # the reviews keep their HTML line breaks
        if not text:
            dropped["empty text"] = dropped.get("empty text", 0) + 1
            continue
        texts.append(text)
        labels.append(label)
    if not texts:
        raise DataError(f"{folder}: no reviews in pos/ or neg/")
    return Examples(
        str(folder), texts, None, labels, list(range(1, len(texts) + 1)), False, dropped
    )


def _check_task_labels(task: Task, examples: Examples) -> None:
    known = set(task.labels)
    for label, line in zip(examples.labels, examples.lines):
        if label not in known:
            raise DataError(
                f"{examples.path}:{line}: label {label!r} is not one of task {task.name}'s labels "
                f"({', '.join(task.labels)}); is this the right file?"
            )


def describe_tasks(data_dir: str | None = None, cache_dir: str | None = None) -> list[dict]:
    """One record per task for ``bertfit tasks``: sizes, licence, and where it is looked for."""
    bases = data_dirs(data_dir)
    records = []
    for task in TASKS.values():
        found = next(
            (
                str(folder)
                for base in bases
                for folder in candidate_folders(task, base)
                if _holds_corpus(task, folder)
            ),
            None,
        )
        if found is None:
            cached = _cached_corpus(task, cache_dir)
            found = None if cached is None else str(cached)
        looked_for = [str(f) for b in bases for f in candidate_folders(task, b)[:1]]
        records.append(
            {
                "task": task.name,
                "title": task.title,
                "problem": {
                    SINGLE: "classification",
                    REGRESSION: "regression",
                    MULTI: "multi-label",
                }[task.problem],
                "labels": list(task.labels) if task.labels else None,
                "metrics": list(task.metrics),
                "rows": task.rows,
                "download_bytes": sum(d.size for d in task.downloads),
                "files": [d.url for d in task.downloads],
                "licence": task.licence,
                "looked_for": looked_for + [str(unpacked_at(task, cache_dir))],
                "found": found,
            }
        )
    return records
