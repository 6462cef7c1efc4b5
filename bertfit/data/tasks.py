"""Named tasks as data: where each corpus comes from, its files, fields, labels and splits.

One small declarative ``Task`` per corpus; ``bertfit.data.corpus`` finds, fetches and reads
them. Checksums are those recorded by TensorFlow Datasets and Hugging Face ``datasets`` for the
same URLs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bertfit.data.labels import REGRESSION, SINGLE
from bertfit.errors import ConfigError

GLUE_URL = "https://dl.fbaipublicfiles.com/glue/data/"


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
    # text, pair and label columns of the Hugging Face export, where they differ from ours;
    # its integer labels index ``labels`` (the order of the HF dataset's ClassLabel names)
    hf_columns: tuple[str, str | None, str] | None = None
    # names for labels stored as codes ("0" -> "negative"): what predictions and reports say
    label_names: dict[str, str] | None = None

    @property
    def problem(self) -> str:
        return REGRESSION if self.labels is None else SINGLE

    def split_name(self, split: str) -> str:
        """``split`` as this table names it: Hugging Face's ``validation`` (and
        ``validation_matched``) is GLUE's ``dev`` (``dev_matched``)."""
        if split not in self.splits and split.startswith("validation"):
            return "dev" + split.removeprefix("validation")
        return split

    def labelled(self, split: str) -> bool:
        split = self.split_name(split)
        return split in self.splits and split not in self.unlabelled


def _glue(
    name: str,
    folder: str,
    title: str,
    archive: str,
    sha256: str,
    size: int,
    columns: tuple[str, str | None, str],  # text, pair, label
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
        text=columns[0],
        pair=columns[1],
        label=columns[2],
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
SENTIMENT = {"0": "negative", "1": "positive"}
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
            hf_columns=("premise", "hypothesis", "label"),
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
            label_names={"neg": "negative", "pos": "positive"},
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
            label_names=SENTIMENT,
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
            ("sentence", None, "label"),
            BINARY,
            ("accuracy",),
            (67349, 872, 1821),
            "see the Stanford Sentiment Treebank (Socher et al. 2013)",
            label_names=SENTIMENT,
        ),
        _glue(
            "cola",
            "CoLA",
            "GLUE CoLA: is the sentence grammatical? (0/1)",
            "CoLA.zip",
            "f212fcd832b8f7b435fb991f101abf89f96b933ab400603bf198960dfc32cbff",
            376971,
            ("3", None, "1"),  # no header row: source, label, original mark, sentence
            BINARY,
            ("mcc", "accuracy"),
            (8551, 1043, 1063),
            "see the CoLA site (nyu-mll.github.io/CoLA)",
            hf_columns=("sentence", None, "label"),
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
            hf_columns=("sentence1", "sentence2", "label"),
        ),
        _glue(
            "qqp",
            "QQP",
            "GLUE QQP: are the two Quora questions duplicates? (0/1)",
            "QQP-clean.zip",
            "40e7c862c04eb26ee04b67fd900e76c45c6ba8e6d8fab4f8f1f8072a1a3fbae0",
            41696084,
            ("question1", "question2", "is_duplicate"),
            BINARY,
            ("f1", "accuracy"),
            (363846, 40430, 390965),
            "Quora terms of service (non-commercial)",
            hf_columns=("question1", "question2", "label"),
        ),
        _glue(
            "stsb",
            "STS-B",
            "GLUE STS-B: sentence similarity, a score from 0 to 5 (regression)",
            "STS-B.zip",
            "e60a6393de5a8b5b9bac5020a1554b54e3691f9d600b775bd131e613ac179c85",
            802872,
            ("sentence1", "sentence2", "score"),
            None,
            ("spearman", "pearson"),
            (5749, 1500, 1379),
            "mixed sources; see LICENSE.txt inside STS-B.zip",
            hf_columns=("sentence1", "sentence2", "label"),
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
            hf_columns=("premise", "hypothesis", "label"),
        ),
        _glue(
            "qnli",
            "QNLI",
            "GLUE QNLI: does the sentence answer the question?",
            "QNLIv2.zip",
            "e634e78627a29adaecd4f955359b22bf5e70f2cbd93b493f2d624138a0c0e5f5",
            10627589,
            ("question", "sentence", "label"),
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
            ("sentence1", "sentence2", "label"),
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
            ("sentence1", "sentence2", "label"),
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
