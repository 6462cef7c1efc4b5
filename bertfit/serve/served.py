"""What a server serves: a classifier run or an embedder, loaded once, with what the routes need to
know about it (``info``) and one forward pass over packed inputs (``compute``).

The model is loaded before the port is bound, so a run that is missing, unfinished or not a run
fails with the one-line errors of ``bertfit predict``; only the batching worker thread calls
``compute``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from bertfit import __version__
from bertfit.config.serve import ServeConfig
from bertfit.data.packing import Packed
from bertfit.errors import ConfigError, ModelError
from bertfit.inference.embed import Embedder
from bertfit.inference.run import Run
from bertfit.rundir import is_embedding_run, is_run_dir

# what a forward pass computes: classifier logits, or sentence vectors (normalised or not)
Kind = Literal["logits", "vectors", "normalized"]


@dataclass
class Served:
    """A loaded classifier run (``run``) or embedder (``embedder``) and its public description."""

    name: str
    run: Run | None = field(default=None, repr=False)
    embedder: Embedder | None = field(default=None, repr=False)
    backend: str = "torch"

    @property
    def kind(self) -> Literal["classifier", "embedder"]:
        return "classifier" if self.run is not None else "embedder"

    @property
    def is_pair(self) -> bool:
        return self.run is not None and self.run.is_pair

    @property
    def max_length(self) -> int:
        if self.run is not None:
            return self.run.meta.max_length
        return self.embedder.pooling.max_length

    @property
    def normalizes(self) -> bool:
        """Whether the embedder's vectors are normalised unless asked otherwise."""
        return self.embedder is not None and bool(self.embedder.pooling.normalize)

    def pack(self, texts: list[str], pairs: list[str] | None = None) -> Packed:
        if self.run is not None:
            return self.run.pack(texts, pairs)
        return self.embedder.pack(texts)

    def compute(self, kind: Kind, packed: Packed) -> np.ndarray:
        """One row per packed input, in order: logits, or (normalised) sentence vectors."""
        if kind == "logits":
            return self.run.packed_logits(packed, batch_size=max(1, len(packed)))
        return _encode_packed(self.embedder, packed, kind == "normalized")

    def info(self) -> dict:
        """What ``GET /info`` answers: the run, its base model, labels, problem and metrics."""
        if self.run is None:
            pooling = self.embedder.pooling
            return {
                "kind": "embedder",
                "run": self.name,
                "base_model": _base_model(Path(self.name)) or self.embedder.name,
                "problem": "embedding",
                "is_pair": False,
                "labels": [],
                "max_length": pooling.max_length,
                "dimensions": int(self.embedder.model.config.hidden_size),
                "pooling": pooling.mode,
                "normalize": bool(pooling.normalize),
                "metrics": _read_metrics(Path(self.name)),
                "version": __version__,
                "backend": self.backend,
            }
        meta = self.run.meta
        return {
            "kind": "classifier",
            "run": self.name,
            "base_model": meta.base_model,
            "problem": meta.problem,
            "is_pair": meta.is_pair,
            "labels": [self.run.output_label(i) for i in range(len(meta.labels))],
            "max_length": meta.max_length,
            "task": meta.task,
            "metrics": _metrics_of(self.run.results),
            "version": __version__,
            "backend": self.backend,
        }

    def warmup_packed(self, rows: int) -> Packed:
        """``rows`` inputs of the full max length, to run once before the server says healthy."""
        text = " ".join(["warm"] * self.max_length)
        return self.pack([text] * rows, [text] * rows if self.is_pair else None)


def load_served(config: ServeConfig) -> Served:
    """Load what ``bertfit serve`` serves: a classifier run, a bi-encoder run, or an encoder
    (``default``, a folder, a hub name) to embed with."""
    from bertfit.inference.embed import load_bi_encoder_run, load_embedder
    from bertfit.inference.run import load

    spec = config.run_dir
    folder = Path(spec)
    if is_embedding_run(folder):
        # the onnx backend's keyword only where asked, so the torch path needs nothing more
        extra = {"backend": config.backend} if config.backend != "torch" else {}
        embedder = load_bi_encoder_run(folder, config.device, **extra)
        return Served(spec, embedder=embedder, backend=config.backend)
    if is_run_dir(folder) or not _names_an_encoder(spec):
        run = load(folder, config.device, backend=config.backend)
        return Served(spec, run=run, backend=config.backend)
    if config.backend != "torch":
        raise ConfigError(
            f"--backend {config.backend} serves an exported run; {spec} is an encoder, not a run"
        )
    return Served(spec, embedder=load_embedder(spec, config.device))


def _names_an_encoder(spec: str) -> bool:
    """An encoder folder (config.json, no bertfit.json), ``default``, or a hub name found offline."""
    from bertfit.models.encoders import resolve_encoder

    folder = Path(spec)
    if folder.is_dir():
        return (folder / "config.json").is_file()
    if folder.exists():
        return False
    try:
        resolve_encoder(spec)
    except ModelError:
        return False  # predict's message ("no such run directory") says more here
    return True


def _metrics_of(results: dict) -> dict:
    """The test metrics of results.json where there are some, else the dev ones."""
    for split in ("test", "dev"):
        if isinstance(results.get(split), dict) and results[split]:
            return {"split": split, **_flat_numbers(results[split])}
    return {}


def _flat_numbers(metrics: dict) -> dict:
    """The scalar metrics (intervals and tables left to the report)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}


def _base_model(folder: Path) -> str | None:
    """The encoder a bi-encoder run was trained from."""
    from bertfit.rundir import read_meta

    try:
        return read_meta(folder).base_model if is_run_dir(folder) else None
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _read_metrics(folder: Path) -> dict:
    from bertfit.rundir import RESULTS, read_results

    if not (folder / RESULTS).is_file():
        return {}
    try:
        return _metrics_of(read_results(folder))
    except (OSError, ValueError, TypeError):
        return {}


def _encode_packed(embedder: Embedder, packed: Packed, normalize: bool) -> np.ndarray:
    """The embedder's vectors of packed inputs in one padded batch, through its backend."""
    import torch

    from bertfit.data.packing import collate
    from bertfit.runtime import pick_precision

    batch = collate(packed, np.arange(len(packed)), embedder.tokenizer.pad_token_id)
    with torch.inference_mode():
        dtype = pick_precision(embedder.precision, embedder.device)
        return embedder.vectors(batch, normalize, dtype)
