"""Named tasks on small files written here in each corpus's real layout: the readers, finding a
local copy (--data-dir, $BERTFIT_DATA_DIR, the canonical archive), downloads through the local
HTTP server, `bertfit tasks`, and end-to-end runs on the tiny model. No network, no ../shared."""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import random
import re
from pathlib import Path

import pytest

from bertfit.cli.main import main
from bertfit.data.corpus import locate, read_split, split_file
from bertfit.data.labels import REGRESSION
from bertfit.data.tasks import TASKS, Download, get_task
from bertfit.errors import ConfigError, DataError
from tests.conftest import FILLER, MARKER, sha, tar_bytes, zip_bytes

NLI = ("entailment", "neutral", "contradiction")
FAST = ["--epochs", "1", "--batch-size", "8", "--max-length", "32", "--no-progress", "--seed", "1"]


pytestmark = pytest.mark.usefixtures("offline_env")


# ---- generated corpora, in their published layout ----------------------------------------------


def sentence(rng: random.Random, marker: bool = False) -> str:
    words = rng.choices(FILLER, k=rng.randint(3, 8))
    if marker:
        words.insert(rng.randrange(len(words) + 1), MARKER)
    return " ".join(words)


def write_tsv(path: Path, header: list[str] | None, rows: list[list], *, bom=False, eol="\n"):
    lines = ([header] if header else []) + rows
    text = "".join("\t".join(map(str, row)) + eol for row in lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((("\ufeff" if bom else "") + text).encode("utf-8"))
    return path


def snli_record(rng: random.Random, i: int, gold: str) -> dict:
    s1, s2 = sentence(rng), sentence(rng)
    votes = [gold] * 3 if gold != "-" else ["neutral", "contradiction", "entailment"]
    return {
        "annotator_labels": votes,
        "captionID": f"{3416050480 + i}.jpg#4",
        "gold_label": gold,
        "pairID": f"{3416050480 + i}.jpg#4r1{gold[0]}",
        "sentence1": s1,
        "sentence1_binary_parse": f"( {s1} )",
        "sentence1_parse": f"(ROOT (S {s1}))",
        "sentence2": s2,
        "sentence2_binary_parse": f"( {s2} )",
        "sentence2_parse": f"(ROOT (S {s2}))",
    }


def write_snli(base: Path, sizes: dict[str, int], dashes: int = 1, seed: int = 0) -> dict:
    """snli_1.0/snli_1.0_{split}.jsonl with ``dashes`` unlabelled ("-") rows per split."""
    rng = random.Random(seed)
    records = {}
    for split, n in sizes.items():
        rows = [snli_record(rng, i, NLI[i % 3]) for i in range(n)]
        for k in range(dashes):
            rows.insert(rng.randrange(len(rows) + 1), snli_record(rng, 900 + k, "-"))
        path = base / "snli_1.0" / f"snli_1.0_{split}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        records[split] = rows
    return records


def write_imdb(base: Path, per_label: dict[str, int], seed: int = 0) -> Path:
    """aclImdb/{split}/{pos,neg}/<id>_<rating>.txt (ids restart in each folder), plus unsup/."""
    rng = random.Random(seed)
    root = base / "aclImdb"
    for split, n in per_label.items():
        for label, ratings in (("pos", (7, 8, 9, 10)), ("neg", (1, 2, 3, 4))):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                review = f"{sentence(rng, label == 'pos')}.<br /><br />{sentence(rng)}."
                (folder / f"{i}_{ratings[i % 4]}.txt").write_text(review)
        (root / split / "urls_pos.txt").write_text("http://www.imdb.com/title/tt0453418/\n")
    (root / "train" / "unsup").mkdir(parents=True, exist_ok=True)
    (root / "train" / "unsup" / "0_0.txt").write_text("an unlabelled review")
    (root / "imdb.vocab").write_text("the\nand\n")
    return root


def write_glue(folder: Path, header: list[str], rows: dict[str, list[list]]) -> Path:
    for split, split_rows in rows.items():
        write_tsv(folder / f"{split}.tsv", header, split_rows)
    return folder


def sst2_rows(n: int, seed: int) -> list[list]:
    rng = random.Random(seed)
    return [[sentence(rng, i % 2 == 0), 1 - i % 2] for i in range(n)]


def write_sst2(folder: Path, train: int = 8, dev: int = 4) -> Path:
    write_glue(
        folder, ["sentence", "label"], {"train": sst2_rows(train, 1), "dev": sst2_rows(dev, 2)}
    )
    write_tsv(folder / "test.tsv", ["index", "sentence"], [[0, "a film"], [1, "the plot"]])
    return folder


def sst2_zip(train: int = 8) -> bytes:
    def tsv(rows):
        return ("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows)).encode()

    return zip_bytes(
        {"SST-2/train.tsv": tsv(sst2_rows(train, 1)), "SST-2/dev.tsv": tsv(sst2_rows(4, 2))}
    )


STSB_HEADER = "index genre filename year old_index source1 source2 sentence1 sentence2 score"


def stsb_rows(n: int, seed: int, scored: bool = True) -> list[list]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        row = [i, "main-captions", "MSRvid", "2012test", f"{i:04d}", "none", "none"]
        row += [sentence(rng), sentence(rng)]
        rows.append(row + ([f"{rng.uniform(0, 5):.3f}"] if scored else []))
    return rows


def write_stsb(folder: Path, train: int = 24, dev: int = 8) -> Path:
    header = STSB_HEADER.split()
    write_glue(folder, header, {"train": stsb_rows(train, 1), "dev": stsb_rows(dev, 2)})
    write_tsv(folder / "test.tsv", header[:-1], stsb_rows(3, 3, scored=False))
    return folder


def rte_rows(n: int, seed: int) -> list[list]:
    rng = random.Random(seed)
    labels = ("entailment", "not_entailment")
    return [[i, sentence(rng), sentence(rng, i % 2 == 0), labels[i % 2]] for i in range(n)]


def write_rte(folder: Path, train: int = 40, dev: int | None = None) -> Path:
    header = ["index", "sentence1", "sentence2", "label"]
    write_tsv(folder / "train.tsv", header, rte_rows(train, 1))
    if dev is not None:
        write_tsv(folder / "dev.tsv", header, rte_rows(dev, 2))
    write_tsv(folder / "test.tsv", header[:3], [row[:3] for row in rte_rows(4, 3)])
    return folder


def patch_downloads(monkeypatch, name: str, *files: bytes) -> None:
    """Give task ``name`` the checksums (and sizes) of these generated files, URLs unchanged."""
    task = TASKS[name]
    items = tuple(
        Download(item.url, sha(data), len(data)) for item, data in zip(task.downloads, files)
    )
    monkeypatch.setitem(TASKS, name, dataclasses.replace(task, downloads=items))


# ---- readers ------------------------------------------------------------------------------------


def test_snli_jsonl_drops_and_counts_dash_labels(tmp_path):
    records = write_snli(tmp_path, {"train": 9, "dev": 3, "test": 3}, dashes=2)
    examples = read_split(get_task("snli"), tmp_path / "snli_1.0", "train")
    kept = [r for r in records["train"] if r["gold_label"] != "-"]
    assert examples.texts == [r["sentence1"] for r in kept]
    assert examples.pairs == [r["sentence2"] for r in kept]
    assert examples.labels == [r["gold_label"] for r in kept]
    assert examples.dropped == {"label '-'": 2}
    assert examples.describe() == "11 rows read, 2 dropped (2 label '-')"


def test_imdb_reads_review_folders_in_a_seeded_shuffle(tmp_path):
    root = write_imdb(tmp_path, {"train": 6, "test": 2})
    (root / "train" / "pos" / "6_10.txt").write_text("a great film.<br /><br />great music too.")
    task = get_task("imdb")
    full = read_split(task, root, "train", seed=3)
    assert sorted(full.labels) == ["neg"] * 6 + ["pos"] * 7  # not unsup/, not urls_pos.txt
    assert all("<br" not in text for text in full.texts)
    assert ("a great film.  great music too.", "pos") in zip(full.texts, full.labels)
    assert all((MARKER in text) == (label == "pos") for text, label in zip(full.texts, full.labels))
    for seed in range(4):  # stored grouped by label: a prefix of a sorted read is all neg
        assert set(read_split(task, root, "train", limit=6, seed=seed).labels) == {"neg", "pos"}
    sample = read_split(task, root, "train", limit=5, seed=3)
    assert sample.texts == read_split(task, root, "train", limit=5, seed=3).texts
    assert sample.texts == full.texts[:5]
    assert read_split(task, root, "train", seed=4).texts != full.texts
    assert len(read_split(task, root, "test")) == 4


NSMC = [
    ("9976970", "아 더빙.. 진짜 짜증나네요 목소리", "0"),
    ("3819312", "흠...포스터보고 초딩영화줄....오버연기조차 가볍지 않구나", "1"),
    ("10265843", "너무재밓었다그래서보는것을추천한다", "0"),
    ("5403919", "", "0"),  # the published file has empty documents
    ("6483659", '"원작의 긴장감을 제대로 살려내지못했다.', "0"),  # a quote opens, never closes
    ("9045019", "교도소 이야기구먼 ..솔직히 재미는 없다..평점 조정", "1"),
]


def test_nsmc_korean_tsv_with_an_empty_document(tmp_path):
    folder = tmp_path / "nsmc"
    write_tsv(folder / "ratings_train.txt", ["id", "document", "label"], [list(r) for r in NSMC])
    write_tsv(folder / "ratings_test.txt", ["id", "document", "label"], [list(NSMC[0])])
    task = get_task("nsmc")
    assert locate(task, str(tmp_path)) == folder
    examples = read_split(task, folder, "train")
    kept = [r for r in NSMC if r[1]]
    assert examples.texts == [r[1] for r in kept]
    assert examples.labels == [r[2] for r in kept]
    assert examples.dropped == {"empty text": 1}
    assert examples.describe() == "6 rows read, 1 dropped (1 empty text)"


def test_cola_headerless_four_columns(tmp_path):
    rows = [
        ["gj04", 1, "", "Our friends won't buy this analysis, let alone the next one we propose."],
        ["gj04", 0, "*", "They drank the pub."],
        ["bc01", 1, "", '"Hello," she said.'],
    ]
    folder = write_glue(tmp_path / "CoLA", None, {"train": rows, "dev": rows[:2]})
    examples = read_split(get_task("cola"), folder, "train")
    assert examples.texts == [row[3] for row in rows]
    assert examples.labels == ["1", "0", "1"]
    assert examples.pairs is None


MRPC_HEADER = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
MRPC_ROWS = [
    [
        1,
        702876,
        702977,
        'Amrozi accused his brother , whom he called " the witness " , of deliberately '
        "distorting his evidence .",
        'Referring to him as only " the witness " , Amrozi accused his brother of deliberately '
        "distorting his evidence .",
    ],
    [0, 2108705, 2108831, "\"Yucaipa owned Dominick 's before selling the chain .", "Yucaipa ."],
    [1, 1330381, 1330521, '"The foodservice pie business does not fit ."', "It does not fit ."],
    [0, 3344667, 3344648, "Shares of Genentech rose $ 2.22 .", "Genentech rose ."],
    [1, 1355540, 1355592, "He said the foodservice pie business .", '" It fits , " he said .'],
]


def test_mrpc_bom_header_and_quotes_stay_text(tmp_path):
    folder = tmp_path / "MRPC"
    write_tsv(folder / "train.tsv", MRPC_HEADER, MRPC_ROWS, bom=True)
    write_tsv(folder / "dev.tsv", MRPC_HEADER, MRPC_ROWS[:2], bom=True)
    examples = read_split(get_task("mrpc"), folder, "train")
    assert examples.texts == [row[3] for row in MRPC_ROWS]
    assert examples.pairs == [row[4] for row in MRPC_ROWS]
    assert examples.labels == ["1", "0", "1", "0", "1"]
    assert examples.dropped == {}


def test_mrpc_train_dev_built_from_the_msr_file_and_glue_dev_ids(tmp_path, monkeypatch):
    train = write_tsv(tmp_path / "msr_paraphrase_train.txt", MRPC_HEADER, MRPC_ROWS, bom=True)
    test = write_tsv(tmp_path / "msr_paraphrase_test.txt", MRPC_HEADER, MRPC_ROWS[:2], bom=True)
    ids = write_tsv(tmp_path / "mrpc_dev_ids.tsv", None, [[702876, 702977], [3344667, 3344648]])
    patch_downloads(monkeypatch, "mrpc", train.read_bytes(), test.read_bytes(), ids.read_bytes())
    task = get_task("mrpc")
    root = locate(task, str(tmp_path), download=False)
    assert root == tmp_path / "cache" / "data" / "MRPC"
    dev = read_split(task, root, "dev")
    assert dev.texts == [MRPC_ROWS[0][3], MRPC_ROWS[3][3]] and dev.labels == ["1", "0"]
    train_split = read_split(task, root, "train")
    assert train_split.texts == [MRPC_ROWS[i][3] for i in (1, 2, 4)]
    assert len(read_split(task, root, "test")) == 2
    assert (root / "train.tsv").read_text().splitlines()[0] == "\t".join(MRPC_HEADER)  # no BOM


def test_stsb_ten_columns_float_scores(tmp_path):
    folder = write_stsb(tmp_path / "STS-B", train=5, dev=2)
    task = get_task("stsb")
    assert task.problem == REGRESSION
    examples = read_split(task, folder, "train")
    rows = stsb_rows(5, 1)
    assert examples.texts == [r[7] for r in rows] and examples.pairs == [r[8] for r in rows]
    assert examples.labels == [float(r[9]) for r in rows]
    with pytest.raises(DataError, match="the test split is published without labels"):
        read_split(task, folder, "test")
    assert read_split(task, folder, "test", with_labels=False).labels is None


SICK_HEADER = (
    "pair_ID sentence_A sentence_B entailment_label relatedness_score entailment_AB entailment_BA "
    "sentence_A_original sentence_B_original sentence_A_dataset sentence_B_dataset SemEval_set"
).split()


def test_sick_crlf_one_file_split_by_semeval_set(tmp_path):
    rng = random.Random(0)
    sets = ["TRAIN"] * 5 + ["TRIAL"] * 2 + ["TEST"] * 3
    rows = []
    for i, semeval in enumerate(sets):
        label = ("NEUTRAL", "ENTAILMENT", "CONTRADICTION")[i % 3]
        a, b = sentence(rng), sentence(rng)
        rows.append(
            [i + 1, a, b, label, f"{1 + i * 0.4:.1f}", "A_neutral_B", "B_neutral_A"]
            + [a.capitalize() + ".", b.capitalize() + ".", "FLICKR", "SEMEVAL", semeval]
        )
    folder = tmp_path / "SICK"
    write_tsv(folder / "SICK.txt", SICK_HEADER, rows, eol="\r\n")
    assert b"\r\n" in (folder / "SICK.txt").read_bytes()
    sick, relatedness = get_task("sick"), get_task("SICK_R")
    assert relatedness.name == "sick-r" and relatedness.problem == REGRESSION
    for split, semeval in (("train", "TRAIN"), ("dev", "TRIAL"), ("test", "TEST")):
        wanted = [r for r in rows if r[-1] == semeval]
        labels = read_split(sick, folder, split)
        assert labels.texts == [r[1] for r in wanted] and labels.pairs == [r[2] for r in wanted]
        assert labels.labels == [r[3] for r in wanted]
        assert read_split(relatedness, folder, split).labels == [float(r[4]) for r in wanted]


def test_mnli_dev_matched(tmp_path):
    header = (
        "index promptID pairID genre sentence1_binary_parse sentence2_binary_parse "
        "sentence1_parse sentence2_parse sentence1 sentence2 label1 label2 label3 label4 label5 "
        "gold_label"
    ).split()
    rows = [
        [
            0,
            63735,
            "63735n",
            "slate",
            "( ( The ...",
            "( ( The ...",
            "(ROOT ...",
            "(ROOT ...",
            s1,
            s2,
        ]
        + [gold] * 6
        for s1, s2, gold in [
            (
                "The new rights are nice enough",
                "Everyone really likes the newest benefits ",
                NLI[1],
            ),
            ('He said, "that is true".', "He agreed .", NLI[0]),
            ("The sun is up .", "It is night .", NLI[2]),
        ]
    ]
    folder = tmp_path / "MNLI"
    write_tsv(folder / "dev_matched.tsv", header, rows)
    task = get_task("mnli")
    examples = read_split(task, folder, "dev_matched")
    assert examples.texts == [r[8] for r in rows] and examples.pairs == [r[9] for r in rows]
    assert examples.labels == [r[-1] for r in rows]
    assert locate(task, str(tmp_path)) == folder  # dev_matched alone is enough to evaluate
    with pytest.raises(ConfigError, match="no split 'dev'; its splits: train, dev_matched"):
        split_file(task, folder, "dev")


def test_a_gz_copy_is_found_and_read(tmp_path):
    folder = tmp_path / "SST-2"
    rows = sst2_rows(6, 1)
    text = "sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows)
    folder.mkdir()
    (folder / "train.tsv.gz").write_bytes(gzip.compress(text.encode()))
    task = get_task("sst2")
    assert locate(task, str(tmp_path)) == folder
    assert split_file(task, folder, "train") == folder / "train.tsv.gz"
    examples = read_split(task, folder, "train")
    assert examples.texts == [s for s, _ in rows] and examples.labels == [str(y) for _, y in rows]


# ---- finding a local copy -----------------------------------------------------------------------


def test_locate_extracted_folders_in_a_data_dir(tmp_path):
    write_snli(tmp_path, {"train": 3, "dev": 3})
    write_sst2(tmp_path / "glue" / "SST-2")
    assert locate(get_task("snli"), str(tmp_path)) == tmp_path / "snli_1.0"
    assert locate(get_task("sst2"), str(tmp_path)) == tmp_path / "glue" / "SST-2"
    assert locate(get_task("sst2"), str(tmp_path / "glue")) == tmp_path / "glue" / "SST-2"


def test_data_dir_from_the_environment(tmp_path, monkeypatch, capsys):
    write_sst2(tmp_path / "glue" / "SST-2")
    monkeypatch.setenv("BERTFIT_DATA_DIR", f"{tmp_path / 'missing'}:{tmp_path}")
    assert locate(get_task("sst2")) == tmp_path / "glue" / "SST-2"
    assert main(["data", "locate", "sst2"]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'glue' / 'SST-2'}\n"


def test_canonical_archive_in_a_data_dir_is_verified_and_extracted(tmp_path, monkeypatch):
    archive = sst2_zip()
    (tmp_path / "SST-2.zip").write_bytes(archive)
    patch_downloads(monkeypatch, "sst2", archive)
    task = get_task("sst2")
    root = locate(task, str(tmp_path), download=False)
    assert root == tmp_path / "cache" / "data" / "SST-2.zip" / "SST-2"
    assert len(read_split(task, root, "train")) == 8
    assert locate(task, str(tmp_path), download=False) == root  # extracted once


def test_archive_with_a_wrong_checksum_is_not_extracted(tmp_path, monkeypatch):
    (tmp_path / "SST-2.zip").write_bytes(sst2_zip())
    patch_downloads(monkeypatch, "sst2", b"some other bytes")
    with pytest.raises(DataError, match=rf"^{tmp_path / 'SST-2.zip'}: checksum mismatch"):
        locate(get_task("sst2"), str(tmp_path), download=False)
    assert not (tmp_path / "cache" / "data" / "SST-2.zip").exists()


# ---- downloads through the local HTTP server ----------------------------------------------------


@pytest.fixture
def mirror(server, monkeypatch):
    """The local server as BERTFIT_DATA_MIRROR, with downloads on."""
    monkeypatch.delenv("BERTFIT_OFFLINE")
    monkeypatch.setenv("BERTFIT_DATA_MIRROR", server.base)
    return server


def test_data_download_verifies_extracts_then_needs_no_network(
    mirror, tmp_path, monkeypatch, capsys
):
    archive = sst2_zip()
    mirror.files["/SST-2.zip"] = archive
    patch_downloads(monkeypatch, "sst2", archive)
    folder = tmp_path / "cache" / "data" / "SST-2.zip" / "SST-2"

    assert main(["data", "download", "sst2", "--no-progress"]) == 0
    assert capsys.readouterr().out == f"{folder}\n"
    assert mirror.requests == [("/SST-2.zip", None)]
    assert (tmp_path / "cache" / "downloads" / "SST-2.zip").read_bytes() == archive
    assert len(read_split(get_task("sst2"), folder, "train")) == 8

    assert main(["data", "download", "sst2", "--no-progress"]) == 0
    assert main(["data", "locate", "sst2"]) == 0
    assert capsys.readouterr().out == f"{folder}\n{folder}\n"
    assert len(mirror.requests) == 1


def test_corrupted_download_fails_in_one_line_and_leaves_nothing(
    mirror, tmp_path, monkeypatch, capsys
):
    archive = sst2_zip()
    mirror.files["/SST-2.zip"] = archive[:-20] + bytes(20)
    patch_downloads(monkeypatch, "sst2", archive)

    assert main(["data", "download", "sst2", "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("bertfit: error: task sst2: ") and captured.err.count("\n") == 1
    assert "SST-2.zip" in captured.err and "checksum mismatch" in captured.err
    downloads = tmp_path / "cache" / "downloads"
    # the file lock may stay (filelock keeps it on Unix); no file, no .part
    assert [p.name for p in downloads.iterdir() if not p.name.endswith(".lock")] == []
    assert not (tmp_path / "cache" / "data" / "SST-2.zip").exists()


def test_imdb_tarball_from_the_mirror(mirror, tmp_path, monkeypatch, capsys):
    source = write_imdb(tmp_path / "src", {"train": 3, "test": 2})
    members = {
        str(path.relative_to(source.parent)): path.read_bytes()
        for path in sorted(source.rglob("*"))
        if path.is_file()
    }
    archive = tar_bytes(members)
    mirror.files["/aclImdb_v1.tar.gz"] = archive
    patch_downloads(monkeypatch, "imdb", archive)

    assert main(["data", "download", "imdb", "--no-progress"]) == 0
    folder = tmp_path / "cache" / "data" / "aclImdb_v1.tar.gz" / "aclImdb"
    assert capsys.readouterr().out == f"{folder}\n"
    assert mirror.requests == [("/aclImdb_v1.tar.gz", None)]
    assert sorted(read_split(get_task("imdb"), folder, "test").labels) == ["neg"] * 2 + ["pos"] * 2


# ---- no network and no local copy ---------------------------------------------------------------


def test_offline_without_a_local_copy_says_what_to_put_where(tmp_path, tiny_bert, capsys):
    assert main(["data", "download", "sst2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bertfit: error: task sst2: no local copy")
    assert "SST-2.zip (https://dl.fbaipublicfiles.com/glue/data/SST-2.zip)" in err
    assert "--data-dir" in err

    empty = tmp_path / "corpora"
    empty.mkdir()
    argv = ["train", "--task", "rte", "--data-dir", str(empty), "--model", str(tiny_bert)]
    assert main([*argv, "--output", str(tmp_path / "run"), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RTE.zip" in err and f"--data-dir {empty}" in err


def test_no_download_without_a_local_copy(monkeypatch, capsys):
    monkeypatch.delenv("BERTFIT_OFFLINE")
    assert main(["data", "locate", "wnli"]) == 2  # locate never downloads
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "(downloads are off)" in err and "WNLI.zip" in err


# ---- bertfit tasks ------------------------------------------------------------------------------


def test_tasks_lists_every_task_and_json_marks_the_found_one(tmp_path, capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for name in TASKS:
        assert re.search(rf"^{re.escape(name)}\s", out, re.M), name
    assert "not here yet" in out

    write_sst2(tmp_path / "corpora" / "glue" / "SST-2")
    assert main(["tasks", "--json", "--data-dir", str(tmp_path / "corpora")]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["task"] for r in records] == list(TASKS)
    assert all({"task", "rows", "licence", "found"} <= set(r) for r in records)
    found = {r["task"]: r["found"] for r in records if r["found"]}
    assert found == {"sst2": str(tmp_path / "corpora" / "glue" / "SST-2")}


def test_tasks_data_dir_at_one_glue_folder_finds_only_that_task(tmp_path, capsys):
    write_sst2(tmp_path / "SST-2")
    assert main(["tasks", "--json", "--data-dir", str(tmp_path / "SST-2")]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["task"] for r in records if r["found"]] == ["sst2"]


# ---- end to end on the tiny model ---------------------------------------------------------------


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """One data dir with STS-B, RTE (no dev.tsv), SNLI and IMDb; a second with RTE and dev.tsv."""
    base = tmp_path_factory.mktemp("corpora")
    write_stsb(base / "glue" / "STS-B")
    write_rte(base / "glue" / "RTE")
    write_rte(base / "with-dev" / "RTE", dev=6)
    snli = write_snli(base, {"train": 24, "dev": 6, "test": 5}, dashes=2)
    write_imdb(base, {"train": 12, "test": 2})
    return {"dir": base, "snli": snli}


@pytest.fixture(scope="module")
def env_for_module(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BERTFIT_OFFLINE", "1")
        patch.setenv("BERTFIT_CACHE", str(tmp_path_factory.mktemp("cache")))
        for name in ("BERTFIT_DATA_DIR", "BERTFIT_DATA_MIRROR", "BERTFIT_DEBUG"):
            patch.delenv(name, raising=False)
        yield


def train_task(tiny_bert, out: Path, task: str, data_dir: Path, *extra: str) -> dict:
    argv = ["train", "--task", task, "--data-dir", str(data_dir), "--model", str(tiny_bert)]
    assert main([*argv, "--output", str(out), *FAST, *extra]) == 0
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def stsb_run(tiny_bert, corpora, env_for_module, tmp_path_factory):
    out = tmp_path_factory.mktemp("stsb") / "run"
    return out, train_task(tiny_bert, out, "stsb", corpora["dir"])


def test_stsb_trains_a_regression_run(stsb_run):
    from transformers import AutoModelForSequenceClassification

    out, results = stsb_run
    assert {"pearson", "spearman"} <= set(results["dev"]) and results["dev"]["n"] == 8
    assert results["problem"] == REGRESSION and "test" not in results  # GLUE test: no labels
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.problem_type == "regression" and model.config.num_labels == 1


def test_stsb_evaluate_and_predict(stsb_run, corpora, capsys):
    out, results = stsb_run
    argv = ["evaluate", str(out), "--task", "stsb", "--data-dir", str(corpora["dir"])]
    assert main([*argv, "--split", "dev", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n"] == 8
    assert metrics["spearman"] == pytest.approx(results["dev"]["spearman"], abs=1e-6)
    assert main(["predict", str(out), "--text", "a", "--pair", "b"]) == 0
    assert re.fullmatch(r"score: -?\d+\.\d{4}\n", capsys.readouterr().out)


@pytest.mark.slow
def test_rte_without_dev_tsv_holds_out_part_of_train(
    tiny_bert, corpora, env_for_module, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="bertfit")
    results = train_task(tiny_bert, tmp_path / "a", "rte", corpora["dir"])
    assert "rte has no dev split in" in caplog.text
    assert "holding out 10% of train as dev" in caplog.text
    assert results["dev"]["n"] == 4 and results["train_examples"] == 36  # 10% of 40, stratified
    assert "test" not in results  # RTE's test.tsv has no labels

    results = train_task(tiny_bert, tmp_path / "b", "rte", corpora["dir"], "--dev-fraction", "0.1")
    assert results["dev"]["n"] == 4 and results["train_examples"] == 36


@pytest.mark.slow
def test_rte_with_dev_tsv_uses_it(tiny_bert, corpora, env_for_module, tmp_path):
    data_dir = corpora["dir"] / "with-dev"
    results = train_task(tiny_bert, tmp_path / "a", "rte", data_dir)
    assert results["dev"]["n"] == 6 and results["train_examples"] == 40

    # dev carved out of train: the labelled dev split is then reported as the test
    results = train_task(tiny_bert, tmp_path / "b", "rte", data_dir, "--dev-fraction", "0.1")
    assert results["dev"]["n"] == 4 and results["train_examples"] == 36
    assert results["test_split"] == "dev" and results["test"]["n"] == 6


@pytest.mark.slow
def test_snli_reports_the_labelled_test_split(tiny_bert, corpora, env_for_module, tmp_path):
    results = train_task(tiny_bert, tmp_path / "run", "snli", corpora["dir"])
    assert results["dev"]["n"] == 6  # the two "-" rows are not scored
    assert results["test_split"] == "test" and results["test"]["n"] == 5
    assert results["labels"] == list(NLI)


@pytest.mark.slow
def test_imdb_train_limit_samples_both_labels(tiny_bert, corpora, env_for_module, tmp_path):
    results = train_task(tiny_bert, tmp_path / "run", "imdb", corpora["dir"], "--train-limit", "10")
    assert results["train_examples"] + results["dev_examples"] == 10
    # one dev row per label present in the sample: both are there
    assert results["dev"]["n"] == 2
    # (reported by the task's label names: issue 13 item 13)
    assert {label: row["support"] for label, row in results["dev"]["per_class"].items()} == {
        "negative": 1,
        "positive": 1,
    }
    assert results["test_split"] == "test" and results["test"]["n"] == 4


# ---- the Hugging Face Parquet export: <folder>/hf_parquet/<split>/0000.parquet ------------------


def write_hf_split(folder: Path, split: str, rows: list[tuple], names=None, shard="0000") -> Path:
    """One shard of HF's export: (text, pair, label id) rows, ClassLabel names in the metadata."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    columns = ["sentence1", "sentence2", "label"]
    table = pa.table({c: [row[i] for row in rows] for i, c in enumerate(columns)})
    table = table.append_column("idx", pa.array(range(len(rows)), pa.int32()))
    if names is not None:
        features = {"label": {"names": list(names), "_type": "ClassLabel"}}
        meta = {"info": {"features": features}}
        table = table.replace_schema_metadata({b"huggingface": json.dumps(meta).encode()})
    path = folder / "hf_parquet" / split / f"{shard}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def hf_rows(n: int, seed: int, ids=(0, 1)) -> list[tuple]:
    rng = random.Random(seed)
    return [(sentence(rng), sentence(rng, i % 2 == 0), ids[i % len(ids)]) for i in range(n)]


def write_hf_qnli(base: Path, validation: int = 6) -> Path:
    """QNLI as the copy in shared datasets has it: HF's validation and test splits only (test
    labels are -1), columns ``question`` and ``sentence`` as in GLUE."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    folder = base / "glue" / "QNLI"
    features = {"label": {"names": ["entailment", "not_entailment"], "_type": "ClassLabel"}}
    meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    for split, rows in (("validation", hf_rows(validation, 1)), ("test", hf_rows(3, 2, (-1,)))):
        question, answer, label = zip(*rows)
        table = pa.table({"question": question, "sentence": answer, "label": label})
        (folder / "hf_parquet" / split).mkdir(parents=True)
        pq.write_table(
            table.replace_schema_metadata(meta), folder / "hf_parquet" / split / "0000.parquet"
        )
    return folder


def test_qnli_export_without_a_train_split(tmp_path):
    folder = write_hf_qnli(tmp_path)
    task = get_task("qnli")
    assert locate(task, str(tmp_path)) == folder  # the validation split is enough
    assert split_file(task, folder, "validation") == folder / "hf_parquet" / "validation"
    assert split_file(task, folder, "dev") == folder / "hf_parquet" / "validation"
    dev = read_split(task, folder, "validation")
    assert dev.labels == ["entailment", "not_entailment"] * 3 and not dev.label_is_int
    assert dev.texts == [r[0] for r in hf_rows(6, 1)] and dev.lines == [1, 2, 3, 4, 5, 6]
    assert read_split(task, folder, "dev").texts == dev.texts
    assert task.labelled("validation") and not task.labelled("test")
    with pytest.raises(DataError, match="the test split is published without labels"):
        read_split(task, folder, "test")
    assert len(read_split(task, folder, "test", with_labels=False)) == 3
    with pytest.raises(DataError) as err:
        read_split(task, folder, "train")
    assert str(err.value) == (
        f"task qnli: no train split in {folder} (expected {folder / 'train.tsv'}); "
        "found: validation, test; pick one with --train-split"
    )


def test_wnli_parquet_train_beside_glue_dev_tsv(tmp_path):
    folder = tmp_path / "WNLI"
    names = ["not_entailment", "entailment"]  # HF's words for GLUE's 0 and 1
    write_hf_split(folder, "train", hf_rows(8, 1), names)
    write_hf_split(folder, "validation", hf_rows(2, 9), names)  # dev.tsv wins over this
    header = ["index", "sentence1", "sentence2", "label"]
    write_tsv(folder / "dev.tsv", header, [[i, *row] for i, row in enumerate(hf_rows(4, 2))])
    task = get_task("wnli")
    assert locate(task, str(tmp_path)) == folder
    train = read_split(task, folder, "train")
    assert train.labels == ["0", "1"] * 4 and train.label_is_int
    assert train.pairs == [r[1] for r in hf_rows(8, 1)]
    dev = read_split(task, folder, "dev")
    assert dev.path == str(folder / "dev.tsv") and len(dev) == 4


def test_export_label_ids_unlabelled_rows_and_foreign_ids(tmp_path):
    folder = tmp_path / "RTE"
    names = ["not_entailment", "entailment"]  # another order than the task's: mapped by name
    write_hf_split(folder, "train", hf_rows(6, 1, (0, 1, -1)), names)
    task = get_task("rte")
    train = read_split(task, folder, "train")
    assert train.labels == ["not_entailment", "entailment"] * 2
    assert train.dropped == {"label '-1'": 2} and train.lines == [1, 2, 4, 5]
    path = write_hf_split(folder, "validation", hf_rows(3, 2, (0, 2)), names=None)
    with pytest.raises(DataError) as err:
        read_split(task, folder, "dev")
    assert str(err.value) == (
        f"{path}:2: label '2' is not a label id of task rte (0 to 1: entailment, not_entailment)"
    )
    write_hf_split(folder, "test", hf_rows(2, 3), names=["a", "b", "c"])
    labelled_test = dataclasses.replace(task, unlabelled=())
    with pytest.raises(DataError, match=r"0000.parquet: 3 label names \(a, b, c\) but task rte"):
        read_split(labelled_test, folder, "test")


def test_export_shards_are_read_as_one_split(tmp_path):
    folder = tmp_path / "RTE"
    write_hf_split(folder, "train", hf_rows(3, 1), shard="0000")
    write_hf_split(folder, "train", hf_rows(2, 2, (5,)), shard="0001")
    with pytest.raises(DataError) as err:
        read_split(get_task("rte"), folder, "train")
    assert str(err.value).startswith(f"{folder / 'hf_parquet' / 'train'}:4: label '5'")
    write_hf_split(folder, "train", hf_rows(2, 2), shard="0001")
    train = read_split(get_task("rte"), folder, "train")
    assert train.lines == [1, 2, 3, 4, 5] and len(train) == 5


def test_mnli_export_columns_and_validation_matched(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    folder = tmp_path / "MNLI" / "hf_parquet" / "validation_matched"
    folder.mkdir(parents=True)
    table = pa.table({"premise": ["p1", "p2"], "hypothesis": ["h1", "h2"], "label": [2, 0]})
    pq.write_table(table, folder / "0000.parquet")
    task = get_task("mnli")
    assert task.split_name("validation_matched") == "dev_matched"
    examples = read_split(task, tmp_path / "MNLI", "validation_matched")
    assert examples.texts == ["p1", "p2"] and examples.labels == ["contradiction", "entailment"]


@pytest.mark.slow
def test_train_on_exports_end_to_end(tiny_bert, tmp_path, capsys):
    wnli = tmp_path / "glue" / "WNLI"
    write_hf_split(wnli, "train", hf_rows(20, 1), ["not_entailment", "entailment"])
    header = ["index", "sentence1", "sentence2", "label"]
    write_tsv(wnli / "dev.tsv", header, [[i, *row] for i, row in enumerate(hf_rows(6, 2))])
    results = train_task(tiny_bert, tmp_path / "wnli", "wnli", tmp_path)
    assert results["train_examples"] == 20 and results["dev"]["n"] == 6
    assert results["labels"] == ["0", "1"]

    write_hf_qnli(tmp_path, validation=20)
    argv = ["train", "--task", "qnli", "--data-dir", str(tmp_path), "--model", str(tiny_bert)]
    assert main([*argv, "--output", str(tmp_path / "none"), *FAST]) == 2
    assert "found: validation, test; pick one with --train-split" in capsys.readouterr().err
    extra = ("--train-split", "validation", "--dev-fraction", "0.1")
    results = train_task(tiny_bert, tmp_path / "qnli", "qnli", tmp_path, *extra)
    assert results["train_examples"] == 18 and results["dev"]["n"] == 2
    assert results["labels"] == ["entailment", "not_entailment"]
