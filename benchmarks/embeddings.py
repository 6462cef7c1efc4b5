"""bertfit's sentence embeddings against sentence-transformers, on the same model, in one process.

1. STS-B dev: Spearman of cosine vs gold from ``bertfit evaluate --objective cosine`` and from
   sentence-transformers' ``EmbeddingSimilarityEvaluator`` (must agree to 3 decimals).
2. Throughput: ``bertfit embed`` (``Embedder.encode``) against ``SentenceTransformer.encode``
   with its defaults on the first 20,000 SST-2 training sentences.

Usage: ``python benchmarks/embeddings.py [--data ../shared/datasets] [--model default]``
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/datasets")
    parser.add_argument("--model", default="default")
    parser.add_argument("--sentences", type=int, default=20000)
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator

    from bertfit.config.commands import EvaluateConfig
    from bertfit.data.corpus import read_split
    from bertfit.data.tasks import get_task
    from bertfit.evaluation.score import evaluate
    from bertfit.inference.embed import load_embedder
    from bertfit.runtime import available_cores

    torch.set_num_threads(available_cores())  # a benchmark process: set once for all of it
    glue = Path(args.data) / "glue"
    ours = evaluate(
        EvaluateConfig(
            run_dir=args.model, objective="cosine", task="stsb", data_dir=str(glue), split="dev"
        )
    )
    embedder = load_embedder(args.model)
    st = SentenceTransformer(str(embedder.path), device="cpu")
    dev = read_split(get_task("stsb"), glue / "STS-B", "dev")
    evaluator = EmbeddingSimilarityEvaluator(
        dev.texts, dev.pairs, [s / 5 for s in dev.labels], name="sts-dev"
    )
    theirs = evaluator(st)
    their_spearman = next(v for k, v in theirs.items() if k.endswith("spearman_cosine"))

    raw = gzip.decompress((glue / "SST-2" / "train.tsv.gz").read_bytes()).decode()
    rows = list(csv.reader(io.StringIO(raw), delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    sentences = [row[0] for row in rows[: args.sentences]]
    embedder.encode(sentences[:256])  # warm-up, both sides
    st.encode(sentences[:256])
    started = time.perf_counter()
    embedder.encode(sentences)
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    st.encode(sentences)
    theirs_s = time.perf_counter() - started
    result = {
        "model": str(embedder.path),
        "threads": torch.get_num_threads(),
        "stsb_dev_spearman_bertfit": round(ours["spearman"], 5),
        "stsb_dev_spearman_sentence_transformers": round(float(their_spearman), 5),
        "sentences": len(sentences),
        "bertfit_per_second": round(len(sentences) / ours_s, 1),
        "sentence_transformers_per_second": round(len(sentences) / theirs_s, 1),
        "speedup": round(theirs_s / ours_s, 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
