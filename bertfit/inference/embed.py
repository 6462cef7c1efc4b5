"""Sentence embeddings: an encoder, a pooling of its token vectors, optional L2 normalisation.

``load_embedder`` takes a bertfit run directory or any encoder spec ``--model`` accepts
(``default``, a folder, a hub name). A folder in sentence-transformers' layout (``modules.json``,
``1_Pooling/config.json``) brings its own pooling and normalisation; others get masked mean
pooling. ``write_sentence_transformers_files`` writes that layout, so ``SentenceTransformer(dir)``
loads what bertfit saved and embeds the same way.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from bertfit.data.examples import Columns
from bertfit.data.memory import is_text_list, read_source, require_texts
from bertfit.data.packing import Packed, Tokenizer, iterate_batches, pack_texts, sorted_batches
from bertfit.errors import ConfigError, ModelError
from bertfit.models.pooling import Pooling, pool, read_pooling
from bertfit.rundir import (
    CHECKPOINT_PREFIX,
    EMBEDDING,
    RESULTS,
    is_embedding_run,
    is_finished,
    is_run_dir,
    read_meta,
)
from bertfit.runtime import autocast, pick_device, pick_precision

log = logging.getLogger("bertfit")


@dataclass
class Embedder:
    """An encoder that turns texts into sentence vectors.

    Example: ``load_embedder("default").encode(["A plane is taking off."])`` is a (1, 384) array.
    """

    name: str
    path: Path
    model: nn.Module = field(repr=False)
    tokenizer: Tokenizer = field(repr=False)
    pooling: Pooling
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "auto"
    # "torch", or "onnx" with ``onnx`` (an ``OnnxEmbedding``) running the exported graph, which
    # pools and normalises inside it; the PyTorch model stays loaded
    backend: str = "torch"
    onnx: Callable[[dict[str, torch.Tensor], bool], np.ndarray] | None = field(
        default=None, repr=False
    )

    def pack(self, texts: list[str]) -> Packed:
        return pack_texts(self.tokenizer, texts, None, self.pooling.max_length, "longest-first")

    @torch.inference_mode()
    def encode(
        self,
        texts: list[str],
        batch_size: int = 64,
        normalize: bool | None = None,
        progress: bool = False,
        column: str = "text",
    ) -> np.ndarray:
        """Float32 vectors, one row per text, in input order; normalised per the model unless
        ``normalize`` says otherwise. Batches go by length, so little compute is padding.

        ``texts`` may also be rows in memory (a list of dicts, a pandas DataFrame, a Hugging
        Face ``Dataset``): their ``column`` is embedded.
        """
        if isinstance(texts, str):
            texts = [texts]
        elif not is_text_list(texts):
            texts = read_source(texts, Columns(column), name="input", with_labels=False).texts
        require_texts(list(texts))
        normalize = self.pooling.normalize if normalize is None else normalize
        packed = self.pack(list(texts))
        dtype = pick_precision(self.precision, self.device)
        out: np.ndarray | None = None
        bar = tqdm(
            total=len(texts), unit="text", disable=not progress, file=sys.stderr, leave=False
        )
        for indices, batch in iterate_batches(
            sorted_batches(packed.lengths, batch_size), packed, self.tokenizer.pad_token_id
        ):
            vectors = self.vectors(batch, normalize, dtype)
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[indices] = vectors
            bar.update(len(indices))
        bar.close()
        width = self.model.config.hidden_size
        return out if out is not None else np.zeros((0, width), dtype=np.float32)

    def vectors(
        self, batch: dict[str, torch.Tensor], normalize: bool, dtype: torch.dtype | None
    ) -> np.ndarray:
        """The sentence vectors of one padded batch, through the backend."""
        if self.onnx is not None:
            return self.onnx(batch, normalize)
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        with autocast(self.device, dtype):
            hidden = self.model(**batch).last_hidden_state
        vectors = pool(hidden.float(), batch["attention_mask"], self.pooling.mode)
        if normalize:
            vectors = F.normalize(vectors, dim=-1)
        return vectors.cpu().numpy()

    def similarity(self, texts: list[str], others: list[str], batch_size: int = 64) -> np.ndarray:
        """Cosine similarity of each text with its partner in ``others``."""
        a = self.encode(texts, batch_size, normalize=True)
        b = self.encode(others, batch_size, normalize=True)
        return (a * b).sum(axis=1)


def load_embedder(
    spec: str,
    device: str = "auto",
    precision: str = "auto",
    backend: str = "torch",
    onnx_file: str | None = None,
) -> Embedder:
    """An ``Embedder`` from a finished bi-encoder run directory or any encoder spec ``--model``
    accepts (``default``, a folder, a hub name).

    ``precision``: ``"auto"`` runs the encoder under bf16 autocast where the CPU or GPU supports
    bf16 (fast; the default encoder's vectors then differ from sentence-transformers' fp32 ones
    by up to about 2e-3 per component), ``"fp32"`` gives sentence-transformers' vectors (to
    about 3e-7), ``"bf16"`` forces bf16. Example: ``load_embedder("runs/sts", precision="fp32").encode(["a text"])``.
    ``backend="onnx"`` (a bi-encoder run only) embeds with the graph that ``bertfit export RUN
    --format onnx`` wrote (``onnx_file``, or the run's ``onnx/`` folder) under onnxruntime.
    """
    folder = Path(spec)
    if backend not in ("torch", "onnx"):
        raise ConfigError(f"--backend must be torch or onnx, got {backend!r}")
    if is_run_dir(folder):
        _check_bi_encoder_run(folder)
    elif backend == "onnx":
        raise ConfigError(
            f"--backend onnx: {spec} is an encoder, not a bi-encoder run, so it has no ONNX "
            "export; train a run (or use --backend torch)"
        )
    embedder = open_embedder(spec, device, precision)
    return with_onnx(embedder, folder, onnx_file) if backend == "onnx" else embedder


def with_onnx(embedder: Embedder, run_dir: Path, onnx_file: str | None = None) -> Embedder:
    """``embedder`` running the run's exported graph (see ``bertfit.inference.onnx``)."""
    from bertfit.inference.onnx import onnx_embedding_forward

    embedder.onnx = onnx_embedding_forward(
        run_dir, onnx_file, embedder.device, embedder.pooling.normalize
    )
    embedder.backend = "onnx"
    return embedder


def is_bi_encoder_run(path: str | os.PathLike) -> bool:
    """A bi-encoder run directory, or one of its checkpoint folders."""
    folder = Path(path)
    in_run = folder.name.startswith(CHECKPOINT_PREFIX) and is_embedding_run(folder.parent)
    return is_embedding_run(folder) or in_run


def load_bi_encoder_run(
    run_dir: str | os.PathLike,
    device: str = "auto",
    checkpoint: str | None = None,
    precision: str = "auto",
    backend: str = "torch",
) -> Embedder:
    """What ``bertfit.load`` gives for a bi-encoder run: its ``Embedder`` (``encode`` texts,
    ``similarity`` of pairs); ``checkpoint`` (best, last, a step) loads one of its checkpoints;
    ``backend="onnx"`` embeds with the run's ONNX export.

    Example: ``bertfit.load("runs/sts").similarity(["A plane takes off."], ["A jet departs."])``.
    """
    folder = Path(run_dir)
    if backend == "onnx" and (checkpoint is not None or folder.name.startswith(CHECKPOINT_PREFIX)):
        raise ModelError("--backend onnx runs the exported final model; drop --checkpoint")
    if checkpoint is not None:
        from bertfit.training.checkpoint import find_checkpoint

        folder = find_checkpoint(folder, checkpoint).path
    if folder.name.startswith(CHECKPOINT_PREFIX):  # a checkpoint is a sentence-transformers model
        return open_embedder(str(folder), device, precision)
    return load_embedder(str(folder), device, precision, backend)


def _check_bi_encoder_run(folder: Path) -> None:
    """A run directory embeds only if it is a finished bi-encoder run."""
    try:
        problem = read_meta(folder).problem
    except (OSError, ValueError, TypeError) as err:
        raise ModelError(f"{folder}: damaged run files ({err})") from None
    if problem != EMBEDDING:
        raise ModelError(
            f"{folder}: a {problem.replace('_', ' ')} run "
            "(a cross-encoder); embed with a bi-encoder run or an encoder such as 'default'"
        )
    if not is_finished(folder):
        from bertfit.training.checkpoint import last_checkpoint

        last = last_checkpoint(folder)
        use = f", or use a checkpoint as the model: {last.path}" if last else ""
        raise ModelError(
            f"{folder}: the run did not finish (no {RESULTS}); resume it with "
            f"'bertfit train --resume {folder}'{use}"
        )


def open_embedder(spec: str, device: str = "auto", precision: str = "auto") -> Embedder:
    """``load_embedder`` without the run-directory checks: also a bi-encoder run that is being
    finished (no results.json yet)."""
    from bertfit.models.classifier import load_tokenizer
    from bertfit.models.encoders import one_line, resolve_encoder
    from bertfit.runtime import quiet_transformers

    encoder = resolve_encoder(spec)
    if encoder.kind != "hf":
        raise ModelError(f"{spec}: sentence embeddings need a Hugging Face-format encoder")
    from transformers import AutoModel

    try:
        with quiet_transformers():
            model = AutoModel.from_pretrained(
                str(encoder.path), dtype=torch.float32, add_pooling_layer=False
            )
    except TypeError:  # encoders without a pooler do not take add_pooling_layer
        try:
            with quiet_transformers():
                model = AutoModel.from_pretrained(str(encoder.path), dtype=torch.float32)
        except Exception as err:
            raise ModelError(f"{encoder.path}: cannot load the encoder ({one_line(err)})") from None
    except Exception as err:  # SafetensorError, OSError, ValueError, RuntimeError, ...
        raise ModelError(f"{encoder.path}: cannot load the encoder ({one_line(err)})") from None
    torch_device = pick_device(device)
    model.to(torch_device).eval()
    limit = getattr(model.config, "max_position_embeddings", 512)
    pooling = read_pooling(encoder.path, max_length=min(128, limit))
    pooling.max_length = min(pooling.max_length, limit)
    return Embedder(
        encoder.name, encoder.path, model, load_tokenizer(encoder), pooling, torch_device, precision
    )


def corpus_key(embedder: Embedder, texts: list[str], normalize: bool) -> str:
    """A short hash naming a cached embedding: the model (and its weights' size and time), its
    pooling and precision, and the very texts embedded (so another column or reading option of
    the same file is another key)."""
    import hashlib

    digest = hashlib.sha256()
    weights = [embedder.path / n for n in ("model.safetensors", "pytorch_model.bin")]
    stamp = [(w.stat().st_size, w.stat().st_mtime_ns) for w in weights if w.exists()]
    identity = [str(embedder.path), stamp, embedder.pooling.__dict__, normalize, embedder.precision]
    graph = getattr(embedder.onnx, "path", None)
    if graph is not None:  # the ONNX graph's vectors (int8 ones above all) are others
        identity += [str(graph), graph.stat().st_size, graph.stat().st_mtime_ns]
    digest.update(json.dumps(identity).encode())
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    return digest.hexdigest()[:16]


def top_k(
    queries: np.ndarray, corpus: np.ndarray, k: int, chunk: int = 65536
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, indices) of the ``k`` highest dot products per query, best first.

    The corpus is scored in chunks, so memory stays at queries x chunk whatever its size.
    """
    k = min(k, len(corpus))
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_index = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(corpus), chunk):
        scores = queries @ corpus[start : start + chunk].T
        take = min(k, scores.shape[1])
        part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        best_scores = np.concatenate([best_scores, np.take_along_axis(scores, part, 1)], axis=1)
        best_index = np.concatenate([best_index, part + start], axis=1)
        keep = np.argsort(-best_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(best_scores, keep, 1)
        best_index = np.take_along_axis(best_index, keep, 1)
    return best_scores, best_index


def read_sentences(path: str | os.PathLike, column: str = "text", **options) -> list[str]:
    """Texts from a .txt file (one per non-blank line) or a .csv/.tsv/.jsonl/.parquet column,
    read as every command reads them; ``options`` are ``read_examples``'s (header, delimiter,
    quoting)."""
    from bertfit.data.examples import Columns
    from bertfit.data.readers import read_examples

    return read_examples(path, Columns(column), with_labels=False, **options).texts


def save_vectors(path: str | os.PathLike, vectors: np.ndarray) -> None:
    """.npy (float32 matrix) or .parquet (one list column ``embedding``), written atomically."""
    from bertfit.errors import ConfigError
    from bertfit.files import atomic_open, save_file_atomic

    name = str(path).lower()
    if name.endswith(".npy"):
        with atomic_open(path, "wb") as handle:  # a handle: np.save would add .npy to a name
            np.save(handle, vectors, allow_pickle=False)
    elif name.endswith(".parquet"):
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ConfigError(
                f"{path}: writing parquet needs pyarrow (pip install pyarrow), or use .npy"
            ) from None
        column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
        table = pa.table({"embedding": column})
        save_file_atomic(lambda tmp: pq.write_table(table, tmp), path)
    else:
        raise ConfigError(f"--output {path}: use .npy or .parquet")


def cached_corpus_vectors(
    embedder: Embedder, path: Path, texts: list[str], batch_size: int, progress: bool, cache: bool
) -> np.ndarray:
    """Normalised corpus vectors, kept in the bertfit cache (``$BERTFIT_CACHE/search/``, never in
    the user's data folder) for the next search of the same texts with the same model."""
    from bertfit.data.download import cache_root
    from bertfit.files import atomic_open

    stored = cache_root() / "search" / f"{path.name}.{corpus_key(embedder, texts, True)}.npy"
    if cache and stored.is_file():
        try:
            vectors = np.load(stored, allow_pickle=False)
            if vectors.ndim == 2 and vectors.shape[0] == len(texts):
                log.info(f"corpus vectors from the cache: {stored}")
                return vectors
        except (OSError, ValueError, EOFError):
            pass  # damaged: embed again
    vectors = embedder.encode(texts, batch_size, normalize=True, progress=progress)
    if cache:
        try:
            with atomic_open(stored, "wb") as handle:
                np.save(handle, vectors, allow_pickle=False)
            log.info(f"corpus vectors cached in {stored} (--no-cache to skip)")
        except OSError:
            pass  # an unwritable cache only costs the next search some time
    return vectors
