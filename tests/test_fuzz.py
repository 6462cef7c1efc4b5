"""Property-based fuzzing (hypothesis) of the readers and of packing.

Readers: whatever bytes a .csv/.tsv/.jsonl (or .gz) file holds, ``read_examples`` returns
consistent ``Examples`` or raises a ``BertfitError``, never anything else. Packing: for any texts
and pairs (empty, control characters, special-token strings, very long) and any valid max length
and truncation, every packed example fits, starts with [CLS], has a [SEP] ending each segment
and nowhere else, and segment ids 0 then 1; collate pads exactly. Deterministic (derandomize).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bertfit.config.fields import TRUNCATIONS
from bertfit.data.examples import Columns, Examples
from bertfit.data.packing import collate, pack_texts, truncate_pair
from bertfit.data.readers import read_examples
from bertfit.errors import BertfitError, ConfigError
from tests.conftest import WORDS

FUZZ = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ---- readers ------------------------------------------------------------------------------------

# characters that matter to CSV/TSV/JSON and to line splitting, plus anything else
SYNTAX = list(",\t\"'\n\r{}[]:\\ ") + ["\x00", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\ufeff"]
TOKENS = ["text", "label", "pair", "pos", "neg", "1", "0", "-1.5", "null", "true", "NaN", "1e999"]
pieces = st.one_of(
    st.sampled_from(SYNTAX),
    st.sampled_from(TOKENS),
    st.text(max_size=4),
)
texts = st.lists(pieces, max_size=60).map("".join)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=True)
    | st.text(max_size=8)
    | st.sampled_from(TOKENS),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
words_text = st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(" ".join)
cell_texts = st.one_of(words_text, words_text, words_text, texts)
table_labels = st.sampled_from(["pos", "neg", "0", "1", "-2", "2.5", "a|b", "", " ", "nan"])
json_labels = st.one_of(table_labels, json_values)
records = st.one_of(
    st.fixed_dictionaries(
        {"text": st.one_of(cell_texts, cell_texts, json_values), "label": json_labels},
        optional={"pair": st.one_of(cell_texts, json_values), "other": json_values},
    ),
    st.dictionaries(st.sampled_from(["text", "pair", "label", "other"]), json_values, max_size=4),
)
table_rows = st.fixed_dictionaries(
    {"text": cell_texts, "label": table_labels}, optional={"pair": cell_texts}
)


def write_table(rows: list[dict], suffix: str) -> bytes:
    """Rows as the csv module (or json) writes them: a well-formed file to start from."""
    if suffix == ".jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode(
            "utf-8", "surrogatepass"
        )
    names = sorted({k for r in rows for k in r}, key=["text", "pair", "label"].index)
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer,
        names,
        delimiter="\t" if suffix == ".tsv" else ",",
        lineterminator="\n",
        quoting=csv.QUOTE_NONE if suffix == ".tsv" else csv.QUOTE_MINIMAL,
        escapechar="\\",
    )
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8", "surrogatepass")


@st.composite
def mutations(draw, data: bytes) -> bytes:
    """``data`` with a few bytes inserted, deleted or replaced, or cut short."""
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "cut"]))
        if op == "insert":
            piece = draw(st.sampled_from(SYNTAX) | st.text(max_size=3))
            data = data[:at] + piece.encode("utf-8", "surrogatepass") + data[at:]
        elif op == "delete":
            data = data[:at] + data[at + draw(st.integers(1, 8)) :]
        else:
            data = data[:at]
    return data


@st.composite
def file_bytes(draw) -> tuple[str, bytes]:
    """(file name, content): a well-formed file, the same mutated, random text or random bytes;
    sometimes gzipped (and then sometimes cut short)."""
    suffix = draw(st.sampled_from([".csv", ".tsv", ".jsonl"]))
    kind = draw(st.sampled_from(["file", "file", "mutated", "mutated", "text", "bytes"]))
    if kind == "bytes":
        data = draw(st.binary(max_size=200))
    elif kind == "text":
        data = draw(texts).encode("utf-8", "surrogatepass")
    elif suffix == ".jsonl" and draw(st.booleans()):
        lines = draw(st.lists(records | json_values, min_size=1, max_size=8))
        data = "".join(json.dumps(r, ensure_ascii=draw(st.booleans())) + "\n" for r in lines)
        data = data.encode("utf-8", "surrogatepass")
    else:
        data = write_table(draw(st.lists(table_rows, min_size=1, max_size=8)), suffix)
    if kind == "mutated":
        data = draw(mutations(data))
    if kind != "bytes" and draw(st.integers(0, 3)) == 0:
        data = gzip.compress(data)
        if draw(st.integers(0, 3)) == 0:
            data = data[: draw(st.integers(0, len(data)))]
        suffix += ".gz"
    return suffix, data


COLUMNS = [
    Columns("text", None, "label"),
    Columns("text", None, "label"),
    Columns("text", "pair", "label"),
    Columns("0", None, "1"),
    Columns("0", "1", "2"),
]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def check_examples(examples: Examples, columns: Columns, with_labels: bool, kind: str) -> None:
    n = len(examples)
    assert n >= 1 and len(examples.lines) == n
    assert all(isinstance(t, str) and t.strip() for t in examples.texts)
    assert examples.lines == sorted(examples.lines) and min(examples.lines) >= 1
    if columns.pair is None:
        assert examples.pairs is None
    else:
        assert len(examples.pairs) == n and all(
            isinstance(p, str) and p.strip() for p in examples.pairs
        )
    if not with_labels:
        assert examples.labels is None
        return
    assert len(examples.labels) == n
    for label in examples.labels:
        if kind == "score":
            assert isinstance(label, float) and np.isfinite(label)
        elif kind == "multi":
            assert isinstance(label, list) and all(isinstance(x, str) for x in label)
        else:
            assert isinstance(label, str) and label


@settings(FUZZ, max_examples=300)
@given(
    content=file_bytes(),
    columns=st.sampled_from(COLUMNS),
    with_labels=st.booleans(),
    kind=st.sampled_from(["single", "multi", "score"]),
    skip_bad_rows=st.booleans(),
    limit=st.none() | st.integers(1, 3),
)
@pytest.mark.slow
def test_readers_return_examples_or_a_bertfit_error(
    scratch, content, columns, with_labels, kind, skip_bad_rows, limit
):
    suffix, data = content
    path = scratch / f"data{suffix}"
    path.write_bytes(data)
    try:
        examples = read_examples(
            path,
            columns,
            with_labels=with_labels,
            limit=limit,
            skip_bad_rows=skip_bad_rows,
            label_kind=kind,
        )
    except BertfitError as err:
        message = str(err)
        assert message and "\n" not in message and str(path) in message
        return
    check_examples(examples, columns, with_labels, kind)
    if limit is not None:
        assert len(examples) <= limit


# ---- packing ------------------------------------------------------------------------------------

SPECIAL = ["[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]", "<cls>", "<sep>", "<pad>", "##s"]
words = st.sampled_from(
    WORDS + SPECIAL + ["", " ", "\x00", "\x1b", "\u2028", "\u200b", "é", "日本"]
)
short_texts = st.one_of(
    st.lists(words, max_size=30).map(" ".join),
    st.text(max_size=40),
    st.lists(words, max_size=30).map("".join),
)
long_texts = st.builds(
    lambda w, n: (w + " ") * n, st.sampled_from(WORDS + SPECIAL), st.integers(60, 3000)
)
any_texts = st.one_of(short_texts, short_texts, long_texts)


@pytest.fixture(scope="module")
def tokenizers(tiny_bert):
    """The tiny BERT's own tokenizer as training loads it, and a d2l word tokenizer."""
    from bertfit.models.classifier import load_tokenizer
    from bertfit.models.d2l import D2L_SPECIAL, D2LTokenizer
    from bertfit.models.encoders import Encoder

    return {
        "hf": load_tokenizer(Encoder("hf", tiny_bert, "tiny")),
        "d2l": D2LTokenizer([*D2L_SPECIAL, *WORDS]),
    }


def check_packed(tok, packed, texts, pairs, max_length: int) -> None:
    cls, sep, pad = tok.cls_token_id, tok.sep_token_id, tok.pad_token_id
    assert len(packed) == len(texts)
    assert packed.offsets[0] == 0 and packed.offsets[-1] == len(packed.ids) == len(packed.types)
    full_a = tok.encode_batch(list(texts))
    full_b = tok.encode_batch(list(pairs)) if pairs is not None else [None] * len(texts)
    for i in range(len(texts)):
        ids, types = (x.tolist() for x in packed.example(i))
        assert 2 <= len(ids) <= max_length
        assert ids[0] == cls and cls not in ids[1:] and pad not in ids
        assert ids[-1] == sep
        seps = [j for j, t in enumerate(ids) if t == sep]
        if pairs is None:
            assert seps == [len(ids) - 1]
            assert types == [0] * len(ids)
            segments = [ids[1:-1]]
        else:
            assert len(seps) == 2, ids  # one [SEP] ends each segment, no other [SEP]
            end_a = seps[0]
            assert types == [0] * (end_a + 1) + [1] * (len(ids) - end_a - 1)
            segments = [ids[1:end_a], ids[end_a + 1 : -1]]
        budget = max_length - len(seps) - 1
        originals = [full_a[i]] if pairs is None else [full_a[i], full_b[i]]
        fits = sum(map(len, originals)) <= budget
        for kept, original in zip(segments, originals):
            assert len(kept) <= len(original)
            if fits:
                assert kept == original  # nothing is cut when it fits
            elif kept:  # a cut keeps a head (and a tail, for head-tail) of the tokens
                assert kept[0] == original[0] and kept[-1] in original


@FUZZ
@given(
    data=st.data(),
    n=st.integers(1, 6),
    paired=st.booleans(),
    max_length=st.integers(8, 64),
    truncation=st.sampled_from(TRUNCATIONS),
    which=st.sampled_from(["hf", "d2l"]),
)
def test_packing_fits_and_keeps_special_tokens_in_place(
    tokenizers, data, n, paired, max_length, truncation, which
):
    tok = tokenizers[which]
    texts = data.draw(st.lists(any_texts, min_size=n, max_size=n))
    pairs = data.draw(st.lists(any_texts, min_size=n, max_size=n)) if paired else None
    packed = pack_texts(tok, texts, pairs, max_length, truncation)
    check_packed(tok, packed, texts, pairs, max_length)

    indices = np.asarray(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n)))
    labels = np.arange(n)
    batch = collate(packed, indices, tok.pad_token_id, labels)
    lengths = packed.lengths[indices]
    assert batch["input_ids"].shape == (len(indices), lengths.max())
    assert batch["attention_mask"].sum(1).tolist() == lengths.tolist()
    assert batch["labels"].tolist() == indices.tolist()
    for row, i in enumerate(indices):
        ids, types = packed.example(i)
        width = len(ids)
        assert batch["input_ids"][row, :width].tolist() == ids.tolist()
        assert batch["token_type_ids"][row, :width].tolist() == types.tolist()
        assert (batch["input_ids"][row, width:] == tok.pad_token_id).all()
        assert (batch["token_type_ids"][row, width:] == 0).all()
        assert (batch["attention_mask"][row, width:] == 0).all()


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    len_a=st.integers(0, 600),
    len_b=st.none() | st.integers(0, 600),
    max_length=st.integers(3, 512),
    truncation=st.sampled_from(TRUNCATIONS),
)
def test_truncate_pair_fits_the_budget(len_a, len_b, max_length, truncation):
    a = list(range(len_a))
    b = None if len_b is None else list(range(1000, 1000 + len_b))
    kept_a, kept_b = truncate_pair(a, b, max_length, truncation)
    budget = max_length - (2 if b is None else 3)
    total = len(kept_a) + (0 if kept_b is None else len(kept_b))
    assert total <= max(budget, 0)
    if len_a + (len_b or 0) <= budget:
        assert (kept_a, kept_b) == (a, b)
    else:
        assert total == budget  # a cut uses the whole budget
    assert set(kept_a) <= set(a) and kept_a == sorted(kept_a)
    if b is not None:
        assert set(kept_b) <= set(b) and kept_b == sorted(kept_b)


def test_max_length_beyond_the_positions_is_refused(tokenizers):
    with pytest.raises(ConfigError, match="--max-length 65 is more than the model's 64 positions"):
        pack_texts(tokenizers["hf"], ["a"], None, 65, "longest-first")
    with pytest.raises(ConfigError, match="no room for text"):
        pack_texts(tokenizers["d2l"], ["a"], ["b"], 2, "longest-first")
