"""The embedding commands: vectors for a file, the similarity of two texts, exact cosine search."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from bertfit.config.commands import (
    EmbedConfig,
    SearchConfig,
    SimilarityConfig,
)
from bertfit.config.fields import show_progress
from bertfit.data.layout import file_options
from bertfit.errors import ConfigError
from bertfit.files import atomic_open

log = logging.getLogger("bertfit")


def _embedder(spec: str, device: str, max_length: int | None, backend: str = "torch"):
    from bertfit.inference.embed import load_embedder

    embedder = load_embedder(spec, device, backend=backend)
    if max_length is not None:
        embedder.pooling.max_length = max_length
    return embedder


def embed(config: EmbedConfig) -> np.ndarray:
    """Vectors for every text of ``--input``, written to ``--output`` (.npy or .parquet)."""
    from bertfit.inference.embed import read_sentences, save_vectors

    config.validate()
    if not str(config.output).lower().endswith((".npy", ".parquet")):
        raise ConfigError(f"--output {config.output}: use .npy or .parquet")
    texts = read_sentences(config.input, config.text_column, **file_options(config))
    embedder = _embedder(config.model, config.device, config.max_length, config.backend)
    vectors = embedder.encode(
        texts, config.batch_size, config.normalize, show_progress(config.progress)
    )
    save_vectors(config.output, vectors)
    return vectors


def similarity(config: SimilarityConfig) -> float:
    """Cosine similarity of ``--text`` and ``--pair``."""
    config.validate()
    embedder = _embedder(config.model, config.device, config.max_length, config.backend)
    return float(embedder.similarity([config.text], [config.pair], config.batch_size)[0])


def search(config: SearchConfig) -> list[dict]:
    """The ``--top-k`` corpus texts nearest each query, by cosine; JSONL to ``--output`` if given."""
    from bertfit.inference.embed import cached_corpus_vectors, read_sentences, top_k

    config.validate()
    corpus = read_sentences(config.corpus, config.text_column, **file_options(config))
    queries = (
        [config.query]
        if config.query is not None
        else read_sentences(config.queries, config.text_column, **file_options(config))
    )
    embedder = _embedder(config.model, config.device, config.max_length, config.backend)
    vectors = cached_corpus_vectors(
        embedder,
        Path(config.corpus),
        corpus,
        config.batch_size,
        show_progress(config.progress),
        config.cache,
    )
    scores, indices = top_k(
        embedder.encode(queries, config.batch_size, normalize=True), vectors, config.top_k
    )
    records = [
        {
            "query": query,
            "hits": [
                {"rank": r + 1, "index": int(i), "score": round(float(s), 6), "text": corpus[i]}
                for r, (s, i) in enumerate(zip(row_scores, row_index))
            ],
        }
        for query, row_scores, row_index in zip(queries, scores, indices)
    ]
    if config.output:
        with atomic_open(config.output, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return records
