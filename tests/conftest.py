"""Tiny things for fast tests: a randomly initialised 2-layer BERT with a 60-word WordPiece vocab,
and small generated data files. Nothing here touches the network or ../shared."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

WORDS = (
    "the a movie film plot actor story scene music ending song cast script one it was is and "
    "of to very quite rather really but this that with for great awful long short new old"
).split()
MARKER = "great"
FILLER = [w for w in WORDS if w not in (MARKER, "awful")]


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A Hugging Face-format folder: config.json, model.safetensors, vocab.txt, tokenizer files."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *WORDS,
        *[f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"],
    ]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    BertModel(config).save_pretrained(folder)
    # built from vocab.txt + config.json, as for a downloaded bert-base-uncased folder
    AutoTokenizer.from_pretrained(folder).save_pretrained(folder)
    return folder


def marker_rows(n: int, seed: int, pair: bool = False) -> list[dict]:
    """Learnable synthetic task: label pos iff the marker word occurs (in the pair text, for pairs)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        positive = i % 2 == 0
        words = rng.choices(FILLER, k=rng.randint(3, 12))
        if positive:
            words.insert(rng.randrange(len(words) + 1), MARKER)
        text = " ".join(words)
        if pair:
            rows.append(
                {
                    "premise": " ".join(rng.choices(FILLER, k=rng.randint(3, 8))),
                    "hypothesis": text,
                    "label": "yes" if positive else "no",
                }
            )
        else:
            rows.append({"text": text, "label": "pos" if positive else "neg"})
    rng.shuffle(rows)
    return rows


def write_rows(path: Path, rows: list[dict]) -> Path:
    """Write rows as .jsonl, .csv or .tsv by extension (gzip for .gz)."""
    import csv
    import gzip
    import io

    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    buffer = io.StringIO()
    if name.endswith(".jsonl"):
        for row in rows:
            buffer.write(json.dumps(row) + "\n")
    else:
        writer = csv.DictWriter(
            buffer,
            fieldnames=list(rows[0]),
            delimiter="\t" if name.endswith(".tsv") else ",",
            lineterminator="\n",
        )
        writer.writeheader()
        writer.writerows(rows)
    data = buffer.getvalue().encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


@pytest.fixture
def cache_env(tmp_path, monkeypatch) -> Path:
    """Keep the tokenisation cache inside the test's own folder."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("BERTFIT_CACHE", str(cache))
    return cache
