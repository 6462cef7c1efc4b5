"""Named tasks: where each corpus comes from, how its files are laid out, and how to read them.

One small declarative ``Task`` per corpus. ``locate`` finds a corpus in ``--data-dir`` (an
extracted folder in its canonical layout, or the canonical archive), then in the cache, then
downloads and verifies it. ``read_split`` turns one split into ``Examples`` through the same
readers as user files. Checksums are those recorded by TensorFlow Datasets and Hugging Face
``datasets`` for the same URLs.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from bertfit.data.examples import Columns, Examples
from bertfit.data.labels import MULTI, REGRESSION, SINGLE
from bertfit.data.readers import read_examples
from bertfit.errors import ConfigError, DataError

log = logging.getLogger("bertfit")
GLUE_URL = "https://dl.fbaipublicfiles.com/glue/data/"
DATA_DIR_ENV = "BERTFIT_DATA_DIR"
OFFLINE_ENV = "BERTFIT_OFFLINE"


@dataclass(frozen=True)
class Download:
    """One file as published: where, how big, and the sha256 it must have."""

    url: str
    sha256: str | None
    size: int

    @property
    def filename(self) -> str:
        return self.url.split("?")[0].rsplit("/", 1)[-1]

    @property
    def is_archive(self) -> bool:
        return self.filename.endswith((".zip", ".tar.gz", ".tgz", ".tar"))


@dataclass(frozen=True)
class Task:
    """A named corpus: files, fields, labels, splits and metrics."""

    name: str
    title: str
    folder: str  # the corpus folder in its canonical layout: "snli_1.0", "aclImdb", "SST-2"
    splits: dict[str, str]  # split name -> file (or folder, for IMDb) inside ``folder``
    text: str
    pair: str | None
    label: str
    labels: tuple[str, ...] | None  # fixed order; None for a regression score
    metrics: tuple[str, ...]  # the first one picks the best checkpoint
    downloads: tuple[Download, ...]
    licence: str
    rows: dict[str, int]  # published sizes, for ``bertfit tasks``
    reader: str = "table"  # "table" (CSV/TSV/JSONL) or "imdb" (one file per review)
    dev_split: str | None = "dev"
    test_split: str | None = "test"
    unlabelled: tuple[str, ...] = ()  # splits published without labels (GLUE's test sets)
    drop_labels: tuple[str, ...] = ()
    split_column: str | None = None  # one file holding every split (SICK's SemEval_set)
    split_values: dict[str, str] = field(default_factory=dict)
    grouped: bool = False  # stored grouped by label: read in a seeded shuffle
    glue: bool = False

    @property
    def problem(self) -> str:
        return REGRESSION if self.labels is None else SINGLE

    def labelled(self, split: str) -> bool:
        return split in self.splits and split not in self.unlabelled


def _glue(
    name: str,
    folder: str,
    title: str,
    archive: str,
    sha256: str,
    size: int,
    text: str,
    pair: str | None,
    label: str,
    labels: tuple[str, ...] | None,
    metrics: tuple[str, ...],
    rows: tuple[int, int, int],
    licence: str,
    **extra,
) -> Task:
    return Task(
        name=name,
        title=title,
        folder=folder,
        splits={"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"},
        text=text,
        pair=pair,
        label=label,
        labels=labels,
        metrics=metrics,
        downloads=(Download(GLUE_URL + archive, sha256, size),),
        licence=licence,
        rows=dict(zip(("train", "dev", "test"), rows)),
        unlabelled=("test",),
        glue=True,
        **extra,
    )


NLI = ("entailment", "neutral", "contradiction")
BINARY = ("0", "1")
RTE_LABELS = ("entailment", "not_entailment")

TASKS: dict[str, Task] = {
    task.name: task
    for task in [
        Task(
            name="snli",
            title="Stanford NLI: premise/hypothesis pairs, 3 classes",
            folder="snli_1.0",
            splits={
                "train": "snli_1.0_train.jsonl",
                "dev": "snli_1.0_dev.jsonl",
                "test": "snli_1.0_test.jsonl",
            },
            text="sentence1",
            pair="sentence2",
            label="gold_label",
            labels=NLI,
            metrics=("accuracy", "macro_f1"),
            downloads=(
                Download(
                    "https://nlp.stanford.edu/projects/snli/snli_1.0.zip",
                    "afb3d70a5af5d8de0d9d81e2637e0fb8c22d1235c2749d83125ca43dab0dbd3e",
                    94550081,
                ),
            ),
            licence="CC BY-SA 4.0",
            rows={"train": 550152, "dev": 10000, "test": 10000},
            drop_labels=("-",),
        ),
        Task(
            name="imdb",
            title="IMDb movie reviews (Maas et al. 2011), positive/negative",
            folder="aclImdb",
            splits={"train": "train", "test": "test"},
            text="text",
            pair=None,
            label="label",
            labels=("neg", "pos"),
            metrics=("accuracy", "macro_f1"),
            downloads=(
                Download(
                    "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
                    "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe",
                    84125825,
                ),
            ),
            licence="research use; no explicit licence (ai.stanford.edu/~amaas/data/sentiment)",
            rows={"train": 25000, "test": 25000},
            reader="imdb",
            dev_split=None,
            grouped=True,
        ),
        Task(
            name="nsmc",
            title="Naver sentiment movie corpus (Korean), positive/negative",
            folder="nsmc",
            splits={"train": "ratings_train.txt", "test": "ratings_test.txt"},
            text="document",
            pair=None,
            label="label",
            labels=BINARY,
            metrics=("accuracy", "macro_f1"),
            downloads=(
                Download(
                    "https://raw.githubusercontent.com/e9t/nsmc/master/ratings_train.txt",
                    "e03b7d14e9e41be8d464a28057cd25d7396c53e67aa7fd5f7e552c59b0ee2940",
                    14628807,
                ),
                Download(
                    "https://raw.githubusercontent.com/e9t/nsmc/master/ratings_test.txt",
                    "8ac9f64052f11dbf6ae0acb5e038f03d90a76f0eda7820cfb3a92d02edfcebda",
                    4893335,
                ),
            ),
            licence="CC0 1.0",
            rows={"train": 150000, "test": 50000},
            dev_split=None,
        ),
        _glue(
            "sst2",
            "SST-2",
            "GLUE SST-2: movie-review sentences, positive/negative",
            "SST-2.zip",
            "d67e16fb55739c1b32cdce9877596db1c127dc322d93c082281f64057c16deaa",
            7439277,
            "sentence",
            None,
            "label",
            BINARY,
            ("accuracy",),
            (67349, 872, 1821),
            "see the Stanford Sentiment Treebank (Socher et al. 2013)",
        ),
        _glue(
            "cola",
            "CoLA",
            "GLUE CoLA: is the sentence grammatical? (0/1)",
            "CoLA.zip",
            "f212fcd832b8f7b435fb991f101abf89f96b933ab400603bf198960dfc32cbff",
            376971,
            "3",  # no header row: source, label, original mark, sentence
            None,
            "1",
            BINARY,
            ("mcc", "accuracy"),
            (8551, 1043, 1063),
            "see the CoLA site (nyu-mll.github.io/CoLA)",
        ),
        Task(
            name="mrpc",
            title="GLUE MRPC: are the two sentences paraphrases? (0/1)",
            folder="MRPC",
            splits={"train": "train.tsv", "dev": "dev.tsv", "test": "msr_paraphrase_test.txt"},
            text="#1 String",
            pair="#2 String",
            label="Quality",
            labels=BINARY,
            metrics=("f1", "accuracy"),
            downloads=(
                Download(
                    "https://dl.fbaipublicfiles.com/senteval/senteval_data/msr_paraphrase_train.txt",
                    "60a9b09084528f0673eedee2b69cb941920f0b8cd0eeccefc464a98768457f89",
                    1047044,
                ),
                Download(
                    "https://dl.fbaipublicfiles.com/senteval/senteval_data/msr_paraphrase_test.txt",
                    "a04e271090879aaba6423d65b94950c089298587d9c084bf9cd7439bd785f784",
                    441275,
                ),
                Download(
                    GLUE_URL + "mrpc_dev_ids.tsv",
                    "971d7767d81b997fd9060ade0ec23c4fc31cbb226a55d1bd4a1bac474eb81dc7",
                    6222,
                ),
            ),
            licence="Microsoft Research Paraphrase Corpus licence (research use)",
            rows={"train": 3668, "dev": 408, "test": 1725},
            glue=True,
        ),
        _glue(
            "qqp",
            "QQP",
            "GLUE QQP: are the two Quora questions duplicates? (0/1)",
            "QQP-clean.zip",
            "40e7c862c04eb26ee04b67fd900e76c45c6ba8e6d8fab4f8f1f8072a1a3fbae0",
            41696084,
            "question1",
            "question2",
            "is_duplicate",
            BINARY,
            ("f1", "accuracy"),
            (363846, 40430, 390965),
            "Quora terms of service (non-commercial)",
        ),
        _glue(
            "stsb",
            "STS-B",
            "GLUE STS-B: sentence similarity, a score from 0 to 5 (regression)",
            "STS-B.zip",
            "e60a6393de5a8b5b9bac5020a1554b54e3691f9d600b775bd131e613ac179c85",
            802872,
            "sentence1",
            "sentence2",
            "score",
            None,
            ("spearman", "pearson"),
            (5749, 1500, 1379),
            "mixed sources; see LICENSE.txt inside STS-B.zip",
        ),
        Task(
            name="mnli",
            title="GLUE MultiNLI: premise/hypothesis pairs, 3 classes, 10 genres",
            folder="MNLI",
            splits={
                "train": "train.tsv",
                "dev_matched": "dev_matched.tsv",
                "dev_mismatched": "dev_mismatched.tsv",
                "test_matched": "test_matched.tsv",
                "test_mismatched": "test_mismatched.tsv",
            },
            text="sentence1",
            pair="sentence2",
            label="gold_label",
            labels=NLI,
            metrics=("accuracy", "macro_f1"),
            downloads=(
                Download(
                    GLUE_URL + "MNLI.zip",
                    "e7c1d896d26ed6caf700110645df426cc2d8ebf02a5ab743d5a5c68ac1c83633",
                    312783507,
                ),
            ),
            licence="mostly OANC (free) and CC BY 3.0; see the MultiNLI paper",
            rows={
                "train": 392702,
                "dev_matched": 9815,
                "dev_mismatched": 9832,
                "test_matched": 9796,
                "test_mismatched": 9847,
            },
            dev_split="dev_matched",
            test_split="dev_mismatched",
            unlabelled=("test_matched", "test_mismatched"),
            glue=True,
        ),
        _glue(
            "qnli",
            "QNLI",
            "GLUE QNLI: does the sentence answer the question?",
            "QNLIv2.zip",
            "e634e78627a29adaecd4f955359b22bf5e70f2cbd93b493f2d624138a0c0e5f5",
            10627589,
            "question",
            "sentence",
            "label",
            RTE_LABELS,
            ("accuracy",),
            (104743, 5463, 5463),
            "CC BY-SA 4.0 (from SQuAD)",
        ),
        _glue(
            "rte",
            "RTE",
            "GLUE RTE: does sentence 1 entail sentence 2?",
            "RTE.zip",
            "6bf86de103ecd335f3441bd43574d23fef87ecc695977a63b82d5efb206556ee",
            697150,
            "sentence1",
            "sentence2",
            "label",
            RTE_LABELS,
            ("accuracy",),
            (2490, 277, 3000),
            "research use (PASCAL RTE challenges)",
        ),
        _glue(
            "wnli",
            "WNLI",
            "GLUE WNLI: Winograd schema as sentence pairs (0/1)",
            "WNLI.zip",
            "ae0e8e4d16f4d46d4a0a566ec7ecceccfd3fbfaa4a7a4b4e02848c0f2561ac46",
            28999,
            "sentence1",
            "sentence2",
            "label",
            BINARY,
            ("accuracy",),
            (635, 71, 146),
            "CC BY 4.0",
        ),
        *[
            Task(
                name=name,
                title=title,
                folder="SICK",
                splits={"train": "SICK.txt", "dev": "SICK.txt", "test": "SICK.txt"},
                text="sentence_A",
                pair="sentence_B",
                label=label,
                labels=labels,
                metrics=metrics,
                downloads=(
                    Download(
                        "https://zenodo.org/record/2787612/files/SICK.zip?download=1",
                        "da272af924399fc2de4889ed55383e38822c10d16c4a949a89d597d09a0b7912",
                        217584,
                    ),
                ),
                licence="CC BY-NC-SA 3.0",
                rows={"train": 4439, "dev": 495, "test": 4906},
                split_column="SemEval_set",
                split_values={"train": "TRAIN", "dev": "TRIAL", "test": "TEST"},
            )
            for name, title, label, labels, metrics in [
                (
                    "sick",
                    "SICK: sentence pairs, entailment / neutral / contradiction",
                    "entailment_label",
                    ("ENTAILMENT", "NEUTRAL", "CONTRADICTION"),
                    ("accuracy", "macro_f1"),
                ),
                (
                    "sick-r",
                    "SICK relatedness: a score from 1 to 5 (regression)",
                    "relatedness_score",
                    None,
                    ("spearman", "pearson"),
                ),
            ]
        ],
    ]
}


def get_task(name: str) -> Task:
    """The task called ``name``; an unknown name lists the known ones."""
    task = TASKS.get(name.lower().replace("_", "-"))
    if task is None:
        raise ConfigError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return task


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


def split_file(task: Task, root: Path, split: str) -> Path | None:
    """The file (or IMDb folder) of ``split`` inside the corpus folder ``root``, if present."""
    if split not in task.splits:
        raise ConfigError(
            f"task {task.name} has no split {split!r}; its splits: {', '.join(task.splits)}"
        )
    path = existing(root / task.splits[split])
    if path is not None and task.reader == "imdb" and not (path / "pos").is_dir():
        return None
    return path


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
            return _unpack(task, local, cache_dir)
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
    return _unpack(task, files, cache_dir)


def _unpacked_at(task: Task, cache_dir: str | None) -> Path:
    """Where a task's files live in the cache once verified: one folder per archive or task."""
    from bertfit.data.download import cache_root

    archive = next((d for d in task.downloads if d.is_archive), None)
    name = archive.filename if archive else task.folder
    return cache_root(cache_dir) / "data" / name


def _cached_corpus(task: Task, cache_dir: str | None) -> Path | None:
    base = _unpacked_at(task, cache_dir)
    return next((f for f in candidate_folders(task, base) if _holds_corpus(task, f)), None)


def _unpack(task: Task, files: list[Path], cache_dir: str | None) -> Path:
    """Verify the canonical files and put them into the cache in the canonical layout.

    Archives are extracted whole (into a temporary folder, then renamed); plain files are
    copied; MRPC's train/dev files are built from the MSR file and GLUE's dev id list.
    """
    from filelock import FileLock

    import bertfit.data.download as dl

    target = _unpacked_at(task, cache_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        for item, path in zip(task.downloads, files):
            if path.name.endswith(".gz") and not item.filename.endswith(".gz"):
                continue  # a compressed copy of a plain file: the checksum is of the plain bytes
            dl.verify(path, item.sha256)
        archive = next((p for d, p in zip(task.downloads, files) if d.is_archive), None)
        if archive is not None:
            dl.extract(archive, target)
        else:
            _copy_files(files, target)
            if task.name == "mrpc":
                _mrpc_train_dev(target)
    found = _cached_corpus(task, cache_dir)
    if found is None:
        raise DataError(
            f"{files[0]}: does not hold the expected {task.folder}/ files "
            f"({', '.join(task.splits.values())})"
        )
    return found


def _copy_files(files: list[Path], target: Path) -> None:
    from bertfit.data.readers import read_text
    from bertfit.files import write_text

    for path in files:
        name = path.name[:-3] if path.name.endswith(".gz") else path.name
        if not (target / name).exists():
            write_text(target / name, read_text(path))  # .gz copies are stored plain


def _not_found(task: Task, bases: list[Path], reason: str) -> str:
    files = " and ".join(f"{d.filename} ({d.url})" for d in task.downloads)
    where = str(bases[0]) if bases else "a folder DIR"
    return (
        f"task {task.name}: no local copy and no download ({reason}); put {files}, or the "
        f"extracted {task.folder}/ folder, into {where} and pass --data-dir {bases[0] if bases else 'DIR'}"
    )


def _mrpc_train_dev(folder: Path) -> None:
    """GLUE's MRPC train.tsv/dev.tsv: the MSR training file split by GLUE's dev id list."""
    from bertfit.data.readers import iter_records
    from bertfit.files import write_text

    _, id_rows = iter_records(folder / "mrpc_dev_ids.tsv", False)
    dev_ids = {tuple(row[:2]) for _, row in id_rows}
    header, rows = iter_records(folder / "msr_paraphrase_train.txt", True)
    kept: dict[str, list[str]] = {"train": [], "dev": []}
    for _, row in rows:
        kept["dev" if (row[1], row[2]) in dev_ids else "train"].append("\t".join(row) + "\n")
    for name, lines in kept.items():
        write_text(folder / f"{name}.tsv", "\t".join(header) + "\n" + "".join(lines))


def read_split(
    task: Task,
    root: Path,
    split: str,
    *,
    limit: int | None = None,
    seed: int = 0,
    with_labels: bool = True,
) -> Examples:
    """One split of a located corpus as ``Examples``; grouped corpora come in a seeded shuffle."""
    path = split_file(task, root, split)
    if path is None:
        raise DataError(
            f"task {task.name}: no {split} split in {root} (expected {root / task.splits[split]})"
        )
    if with_labels and not task.labelled(split):
        raise DataError(f"task {task.name}: the {split} split is published without labels")
    if task.reader == "imdb":
        examples = _read_review_folders(path, seed, limit)
    else:
        examples = read_examples(
            path,
            Columns(task.text, task.pair, task.label),
            with_labels=with_labels,
            limit=None if task.grouped else limit,
            skip_bad_rows=True,
            label_kind="score" if task.problem == REGRESSION else "single",
            drop_labels=task.drop_labels,
            where=(task.split_column, task.split_values[split]) if task.split_column else None,
        )
        if task.grouped:
            examples = _shuffled(examples, seed, limit)
    if with_labels and task.labels is not None:
        _check_task_labels(task, examples)
    log.info(f"{task.name} {split}: {examples.describe()} ({path})")
    return examples


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
    records = []
    for task in TASKS.values():
        bases = data_dirs(data_dir)
        found = next(
            (
                str(folder)
                for base in bases
                for folder in candidate_folders(task, base)
                if _holds_corpus(task, folder)
            ),
            None,
        )
        cached = _unpacked_at(task, cache_dir)
        if found is None:
            found = _cached_corpus(task, cache_dir)
            found = None if found is None else str(found)
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
                "looked_for": [str(f) for b in bases for f in candidate_folders(task, b)[:1]]
                + [str(cached)],
                "found": found,
            }
        )
    return records
