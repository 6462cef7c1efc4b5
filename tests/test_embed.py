"""Sentence embeddings: pooling, the sentence-transformers round trip, search, the CLI commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bertfit.cli.main import main
from bertfit.errors import ModelError
from bertfit.inference.embed import load_embedder, top_k
from bertfit.models.pooling import Pooling, pool, read_pooling, write_sentence_transformers_files
from tests.conftest import write_rows


def test_pooling_on_exact_tensors_ignores_padding():
    hidden = torch.tensor(
        [[[1.0, 2.0], [3.0, 4.0], [100.0, -100.0]], [[5.0, -1.0], [7.0, 9.0], [1.0, 1.0]]]
    )
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert torch.allclose(pool(hidden, mask, "mean"), torch.tensor([[2.0, 3.0], [13 / 3, 3.0]]))
    assert pool(hidden, mask, "max").tolist() == [[3.0, 4.0], [7.0, 9.0]]
    assert pool(hidden, mask, "cls").tolist() == [[1.0, 2.0], [5.0, -1.0]]
    with pytest.raises(ValueError, match="unknown pooling"):
        pool(hidden, mask, "sum")


@pytest.fixture(scope="module")
def st_tiny(tiny_bert, tmp_path_factory):
    """The tiny BERT with sentence-transformers files: max pooling, normalised."""
    import shutil

    folder = tmp_path_factory.mktemp("st") / "tiny"
    shutil.copytree(tiny_bert, folder)
    write_sentence_transformers_files(folder, Pooling("max", True, 32), 32)
    return folder


def test_sentence_transformers_loads_our_files_and_embeds_the_same(st_tiny):
    from sentence_transformers import SentenceTransformer

    assert read_pooling(st_tiny) == Pooling("max", True, 32)
    texts = ["the movie was great", "a", "one long story with a short ending and a new song"]
    ours = load_embedder(str(st_tiny), device="cpu", precision="fp32").encode(texts)
    theirs = SentenceTransformer(str(st_tiny), device="cpu").encode(texts)
    assert np.abs(ours - theirs).max() < 1e-5
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_plain_encoder_gets_mean_pooling_without_normalisation(tiny_bert):
    embedder = load_embedder(str(tiny_bert), device="cpu", precision="fp32")
    assert embedder.pooling.mode == "mean" and not embedder.pooling.normalize
    one = embedder.encode(["great movie", "old song and a long story"])
    # batches go by length; results come back in input order, the same as one at a time
    assert np.allclose(one[1], embedder.encode(["old song and a long story"])[0], atol=1e-5)


def test_top_k_in_chunks_equals_the_full_product():
    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((1000, 8)).astype(np.float32)
    queries = rng.standard_normal((3, 8)).astype(np.float32)
    scores, index = top_k(queries, corpus, 5, chunk=64)
    full = queries @ corpus.T
    expected = np.argsort(-full, axis=1)[:, :5]
    assert (index == expected).all()
    assert np.allclose(scores, np.take_along_axis(full, expected, 1))
    assert top_k(queries, corpus[:3], 5)[1].shape == (3, 3)  # k larger than the corpus


def test_search_finds_the_planted_neighbour_and_caches(st_tiny, tmp_path, capsys):
    words = "the a movie film plot actor story scene music ending song cast script".split()
    rng = np.random.default_rng(1)
    lines = [" ".join(rng.choice(words, size=6)) for _ in range(300)]
    planted = "great great great awful awful"
    lines.insert(137, planted)
    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n".join(lines) + "\n")
    out = tmp_path / "hits.jsonl"
    args = ["search", str(st_tiny), "--corpus", str(corpus), "--top-k", "3", "--no-progress"]
    assert main([*args, "--query", planted, "--output", str(out)]) == 0
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["hits"][0]["index"] == 137 and record["hits"][0]["text"] == planted
    assert record["hits"][0]["score"] == pytest.approx(1.0, abs=1e-3)
    from bertfit.data.download import cache_root

    # in the bertfit cache, not beside the user's corpus (issue 13 item 10)
    assert not list(tmp_path.glob("docs.txt.*.npy"))
    cached = list((cache_root() / "search").glob("docs.txt.*.npy"))
    assert len(cached) == 1 and np.load(cached[0]).shape[0] == len(lines)
    stamp = cached[0].stat().st_mtime_ns
    capsys.readouterr()
    assert main([*args, "--query", planted]) == 0  # second search reuses the cache
    assert cached[0].stat().st_mtime_ns == stamp
    assert capsys.readouterr().out.splitlines()[1].endswith(planted)


@pytest.mark.slow
def test_embed_command_writes_npy_for_many_texts(st_tiny, tmp_path):
    texts = [f"song {i % 7} and story {i % 11}" for i in range(10000)]
    src = write_rows(tmp_path / "in.tsv", [{"text": t} for t in texts])
    out = tmp_path / "vecs.npy"
    assert (
        main(
            [
                "embed",
                str(st_tiny),
                "--input",
                str(src),
                "--output",
                str(out),
                "--no-progress",
                "--batch-size",
                "256",
            ]
        )
        == 0
    )
    vectors = np.load(out)
    assert vectors.shape == (10000, 32) and vectors.dtype == np.float32
    assert np.allclose(vectors[0], vectors[77], atol=1e-6)  # the same text gives the same vector
    assert (
        main(["embed", str(st_tiny), "--input", str(src), "--output", str(tmp_path / "v.bin")]) == 2
    )
    assert not (tmp_path / "v.bin").exists()


def test_similarity_and_cosine_evaluation(st_tiny, tmp_path, capsys):
    assert main(["similarity", str(st_tiny), "--text", "great movie", "--pair", "great movie"]) == 0
    assert float(capsys.readouterr().out.split(":")[1]) == pytest.approx(1.0, abs=1e-3)
    rows = [
        {"a": "great movie", "b": "great movie", "score": 5.0},
        {"a": "great film", "b": "awful script", "score": 1.0},
        {"a": "the plot", "b": "the plot", "score": 4.5},
        {"a": "new song", "b": "old actor", "score": 0.5},
    ]
    data = write_rows(tmp_path / "sts.csv", rows)
    common = [
        "evaluate",
        str(st_tiny),
        "--data",
        str(data),
        "--text-column",
        "a",
        "--label-column",
        "score",
    ]
    assert main([*common, "--objective", "cosine", "--pair-column", "b", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics) == {"spearman", "pearson", "n", "ci"} and metrics["n"] == 4
    assert main([*common, "--objective", "cosine"]) == 2
    assert "--pair-column" in capsys.readouterr().err


def test_classification_run_is_not_an_embedder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "bertfit.json").write_text(json.dumps({"problem": "single_label_classification"}))
    with pytest.raises(ModelError, match="cross-encoder"):
        load_embedder(str(run))
