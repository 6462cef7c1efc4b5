"""How long reading and tokenising a full SNLI-sized training split takes.

Generates ``snli_1.0/snli_1.0_train.jsonl`` with 550,152 lines shaped like the real file (the
same fields, parse strings included, sentence lengths like SNLI's, 785 lines with gold label
``-``), then times ``read_split`` (JSON parsing, label checks) and packing with the default
encoder's tokenizer (no cache). Usage: ``python benchmarks/read_speed.py [--rows N]``.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

WORDS = (
    "a man woman child dog two people group is are playing sitting standing walking on in the "
    "street park beach water with ball red blue shirt while near outside inside young old "
    "black white running riding bike holding looking at camera"
).split()
LABELS = ["entailment", "neutral", "contradiction"]


def sentence(rng: random.Random, mean: int) -> str:
    words = rng.choices(WORDS, k=max(3, int(rng.gauss(mean, mean / 3))))
    return " ".join(words).capitalize() + "."


def parse_of(text: str) -> str:
    return "( ( " + " ) ( ".join(text.split()) + " ) )"


def write_snli(folder: Path, rows: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    path = folder / "snli_1.0" / "snli_1.0_train.jsonl"
    path.parent.mkdir(parents=True)
    dashes = set(rng.sample(range(rows), k=min(785, rows)))
    with path.open("w", encoding="utf-8") as out:
        for i in range(rows):
            s1, s2 = sentence(rng, 14), sentence(rng, 8)
            gold = "-" if i in dashes else rng.choice(LABELS)
            record = {
                "annotator_labels": [gold if gold != "-" else "neutral"],
                "captionID": f"{i}.jpg#0",
                "gold_label": gold,
                "pairID": f"{i}.jpg#0r1n",
                "sentence1": s1,
                "sentence1_binary_parse": parse_of(s1),
                "sentence1_parse": "(ROOT (S " + parse_of(s1) + "))",
                "sentence2": s2,
                "sentence2_binary_parse": parse_of(s2),
                "sentence2_parse": "(ROOT (S " + parse_of(s2) + "))",
            }
            out.write(json.dumps(record) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=550152)
    args = parser.parse_args()

    import torch

    from bertfit.data.corpus import read_split
    from bertfit.data.packing import pack_texts
    from bertfit.data.tasks import get_task
    from bertfit.models.classifier import load_tokenizer
    from bertfit.models.encoders import resolve_encoder
    from bertfit.runtime import available_cores

    torch.set_num_threads(available_cores())  # a benchmark process: set once for all of it
    with tempfile.TemporaryDirectory() as tmp:
        path = write_snli(Path(tmp), args.rows)
        size_mb = path.stat().st_size / 1e6
        started = time.perf_counter()
        examples = read_split(get_task("snli"), path.parent, "train")
        read_s = time.perf_counter() - started
    tokenizer = load_tokenizer(resolve_encoder("default"))
    started = time.perf_counter()
    packed = pack_texts(tokenizer, examples.texts, examples.pairs, 128, "longest-first")
    pack_s = time.perf_counter() - started
    result = {
        "rows": args.rows,
        "file_mb": round(size_mb, 1),
        "kept": len(examples),
        "dropped": examples.dropped,
        "read_seconds": round(read_s, 1),
        "tokenise_pack_seconds": round(pack_s, 1),
        "total_seconds": round(read_s + pack_s, 1),
        "tokens": int(packed.lengths.sum()),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
