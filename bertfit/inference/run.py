"""Use a trained run: load it, compute logits for packed inputs, predict labels with probabilities."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from bertfit.data.labels import MULTI, REGRESSION
from bertfit.data.memory import is_text_list, read_source, require_texts
from bertfit.data.packing import Packed, Tokenizer, iterate_batches, pack_texts, sorted_batches
from bertfit.errors import ModelError
from bertfit.evaluation.metrics import sigmoid, softmax
from bertfit.rundir import (
    RESULTS,
    RUN_CONFIG,
    RunMeta,
    is_finished,
    is_run_dir,
    read_meta,
    read_results,
    thresholds_of,
    trained_columns,
)
from bertfit.runtime import autocast, pick_device, pick_precision

# A backend's forward pass: a padded batch (input_ids, token_type_ids, attention_mask) in, one
# float32 row per example out (logits, or sentence vectors for an embedder).
Forward = Callable[[dict[str, torch.Tensor]], np.ndarray]


def torch_forward(
    model: nn.Module, device: torch.device, dtype: torch.dtype | None, lean: bool | None = None
) -> Forward:
    """The logits of ``model`` (already in eval mode) on ``device`` under ``dtype`` autocast.

    A plain BERT classifier runs the lean forward of ``models/fastbert.py`` (the same maths):
    on an SST-2 MiniLM run it cut the latency of one sentence by 15-30 % and gave 3-12 % more
    sentences/s at batch 32 than the model's own forward (``benchmarks/inference_speed.py``).
    """
    from bertfit.models.fastbert import lean_logits, supports_lean_forward

    if lean is None:  # ``lean=True``: a mirror of the plain BERT classifier's modules
        lean = supports_lean_forward(model)

    @torch.inference_mode()
    def forward(batch: dict[str, torch.Tensor]) -> np.ndarray:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with autocast(device, dtype):
            if lean:
                ids, types, mask = (
                    batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")
                )
                return lean_logits(model, ids, types, mask).float().cpu().numpy()
            return model(**batch).logits.float().cpu().numpy()

    return forward


def batched_outputs(
    forward: Forward,
    packed: Packed,
    pad_id: int,
    batch_size: int = 64,
    progress: str | None = None,
) -> np.ndarray:
    """``forward`` over every packed example in batches formed by length, rows in input order.

    ``progress`` is the description of a progress bar on stderr ("scoring"); None shows none.
    """
    out = None
    bar = tqdm(
        total=len(packed), desc=progress, unit="ex", disable=progress is None, file=sys.stderr,
        leave=False, mininterval=0.5,
    )  # fmt: skip
    for indices, batch in iterate_batches(
        sorted_batches(packed.lengths, batch_size), packed, pad_id
    ):
        rows = forward(batch)
        if out is None:
            out = np.empty((len(packed), rows.shape[1]), dtype=np.float32)
        out[indices] = rows
        bar.update(len(indices))
    bar.close()
    return out if out is not None else np.empty((0, 0), dtype=np.float32)


def compute_logits(
    model: nn.Module,
    packed: Packed,
    pad_id: int,
    batch_size: int = 64,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    progress: str | None = None,
) -> np.ndarray:
    """Logits of a PyTorch model for every packed example, in input order (see
    ``batched_outputs``); the model is put back in the mode it was in."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        return batched_outputs(
            torch_forward(model, device, dtype), packed, pad_id, batch_size, progress
        )
    finally:
        model.train(was_training)


@dataclass
class Run:
    """A finished run directory, loaded: the model, its tokenizer and what it was trained with.

    Example: ``bertfit.load("runs/sst2").predict(["a gorgeous, witty, seductive movie"])``.
    """

    directory: Path
    meta: RunMeta
    results: dict
    # the PyTorch model; with the onnx backend None until something needs it (see ``model``)
    torch_model: nn.Module | None = field(repr=False)
    tokenizer: Tokenizer = field(repr=False)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # "torch", or "onnx" with ``forward`` running the exported graph under onnxruntime
    backend: str = "torch"
    forward: Forward | None = field(default=None, repr=False)
    model_loader: Callable[[], nn.Module] | None = field(default=None, repr=False)

    @property
    def model(self) -> nn.Module:
        """The PyTorch model (loaded on first use when the run predicts through onnx)."""
        if self.torch_model is None and self.model_loader is not None:
            self.torch_model = self.model_loader()
        return self.torch_model

    @property
    def labels(self) -> list[str]:
        return self.meta.labels

    @property
    def problem(self) -> str:
        """single_label_classification, regression or multi_label_classification."""
        return self.meta.problem

    @property
    def thresholds(self) -> np.ndarray:
        """Multi-label decision thresholds, one per label (0.5 unless tuned on dev)."""
        return np.asarray(thresholds_of(self.results, self.labels))

    @property
    def is_pair(self) -> bool:
        return self.meta.is_pair

    def pack(self, texts: list[str], pairs: list[str] | None = None) -> Packed:
        return pack_texts(self.tokenizer, texts, pairs, self.meta.max_length, self.meta.truncation)

    def logits(
        self,
        texts: list[str],
        pairs: list[str] | None = None,
        batch_size: int = 64,
        progress: str | None = None,
    ) -> np.ndarray:
        """Raw output scores, one row per input (``progress``: a progress bar's description)."""
        return self.packed_logits(self.pack(texts, pairs), batch_size, progress)

    def packed_logits(
        self, packed: Packed, batch_size: int = 64, progress: str | None = None
    ) -> np.ndarray:
        """Raw output scores of packed inputs, through the run's backend."""
        pad = self.tokenizer.pad_token_id
        if self.forward is not None:
            return batched_outputs(self.forward, packed, pad, batch_size, progress)
        dtype = pick_precision("auto", self.device)
        return compute_logits(self.model, packed, pad, batch_size, self.device, dtype, progress)

    def predict(
        self, texts: list[str] | str, pairs: list[str] | str | None = None, batch_size: int = 64
    ) -> list[dict]:
        """One record per input, in input order: ``{"label", "probabilities"}`` for
        classification, ``{"score"}`` for regression, ``{"labels", "probabilities"}`` for
        multi-label (the labels at or above their threshold).

        ``pairs`` gives the second texts of a pair task, e.g.
        ``run.predict(["A man sleeps."], ["A person rests."])``. ``texts`` may also be rows in
        memory (a list of dicts, a pandas DataFrame, a Hugging Face ``Dataset``) with the
        columns the run was trained on.
        """
        if isinstance(texts, str):
            texts = [texts]
        elif is_text_list(texts):
            texts = list(texts)
        else:  # rows in memory, in the columns the run was trained on
            examples = read_source(
                texts, trained_columns(self.meta), name="input", with_labels=False
            )
            texts, pairs = examples.texts, examples.pairs
        if isinstance(pairs, str):
            pairs = [pairs]
        if self.is_pair and pairs is None:
            raise ModelError(
                f"{self.directory}: this model was trained on text pairs; give the second texts too"
            )
        if not self.is_pair and pairs is not None:
            raise ModelError(
                f"{self.directory}: this model was trained on single texts; a pair text was given"
            )
        if pairs is not None and len(pairs) != len(texts):
            raise ModelError(f"got {len(texts)} texts but {len(pairs)} pair texts")
        require_texts(texts, pairs)
        return self.records(
            self.logits(list(texts), None if pairs is None else list(pairs), batch_size)
        )

    def records(self, logits: np.ndarray) -> list[dict]:
        """Prediction records from raw model outputs, as ``predict`` returns them."""
        if len(logits) == 0:
            return []
        if self.problem == REGRESSION:
            return [{"score": round(float(row[0]), 6)} for row in logits]
        if self.problem == MULTI:
            cut = self.thresholds
            return [
                {
                    "labels": [self.output_label(i) for i in np.flatnonzero(row >= cut)],
                    "probabilities": {
                        label: round(float(p), 6) for label, p in zip(self.labels, row)
                    },
                }
                for row in sigmoid(logits)
            ]
        return [self.record(row) for row in softmax(logits)]

    def explain(self, text: str, pair: str | None = None, steps: int = 50) -> dict:
        """Word scores for one prediction (attention and integrated gradients); see ``explain``."""
        from bertfit.inference.explain import explain

        return explain(self, text, pair, steps)

    def record(self, probabilities: np.ndarray) -> dict:
        """The prediction record for one row of probabilities: best label and all probabilities."""
        best = int(probabilities.argmax())
        return {
            "label": self.output_label(best),
            "probabilities": {
                label: round(float(p), 6) for label, p in zip(self.labels, probabilities)
            },
        }

    def output_label(self, index: int) -> str | int:
        """The label as it appeared in the training data (an int when all labels were integers)."""
        label = self.labels[index]
        return int(label) if self.meta.label_is_int else label


def load(
    run_dir: str | Path,
    device: str = "auto",
    checkpoint: str | None = None,
    backend: str = "torch",
    onnx_file: str | None = None,
) -> Run:
    """Load a finished run directory written by ``bertfit train``.

    ``checkpoint`` (best, last, or a step) loads one of the run's checkpoints instead, which
    also works while the run is unfinished; ``load("runs/x/checkpoint-63")`` is
    ``load("runs/x", checkpoint="63")``. ``backend="onnx"`` predicts with the model that
    ``bertfit export --format onnx`` wrote (``onnx_file``, or the run's ``onnx/`` folder) under
    onnxruntime; the PyTorch model is then loaded only if ``explain`` (or ``.model``) needs it.
    """
    from bertfit.models.classifier import load_classifier

    directory, checkpoint = _run_directory(Path(run_dir), checkpoint)
    finished = is_finished(directory)
    if not finished and checkpoint is None:
        raise ModelError(_unfinished_message(directory))
    try:
        meta = read_meta(directory)
        results = read_results(directory) if finished else {}
    except (OSError, ValueError, TypeError) as err:
        raise ModelError(f"{directory}: damaged run files ({err})") from None
    if meta.is_embedding:
        raise ModelError(
            f"{directory}: a bi-encoder (sentence embeddings) run; use 'bertfit similarity', "
            f"'embed' or 'search' with it, or bertfit.load_embedder('{directory}') in Python"
        )
    weights = directory
    if checkpoint is not None:
        from bertfit.training.checkpoint import find_checkpoint

        chosen = find_checkpoint(directory, checkpoint)
        weights, results = chosen.path, _checkpoint_results(chosen.state, meta.labels)
    torch_device = pick_device(device)
    forward = _backend_forward(directory, backend, checkpoint, onnx_file, torch_device)
    if forward is None and meta.encoder_kind != "d2l":
        forward = _lean_forward(weights, torch_device)

    def load_model() -> tuple[nn.Module, Tokenizer]:
        model, tokenizer = load_classifier(weights, meta.encoder_kind)
        return model.to(torch_device).eval(), tokenizer

    if forward is not None:  # predicts without the transformers model: load it if explain asks
        from bertfit.models.classifier import load_run_tokenizer

        tokenizer = load_run_tokenizer(weights)
        run = Run(directory, meta, results, None, tokenizer, torch_device, backend, forward)
        run.model_loader = lambda: load_model()[0]
        return run
    model, tokenizer = load_model()
    return Run(directory, meta, results, model, tokenizer, torch_device, backend, forward)


def _run_directory(directory: Path, checkpoint: str | None) -> tuple[Path, str | None]:
    """(run directory, checkpoint) that ``load`` was pointed at: a checkpoint folder stands for
    its run with ``--checkpoint``; a file, a missing folder or a foreign one is refused."""
    from bertfit.rundir import CHECKPOINT_PREFIX

    up = directory.parent
    if directory.is_file():  # model.safetensors, bertfit.json: the folder that holds it may do
        usable = is_run_dir(up) or (up.name.startswith(CHECKPOINT_PREFIX) and is_run_dir(up.parent))
        raise ModelError(
            f"{directory}: is a file, expected a run directory (the folder that holds {RUN_CONFIG})"
            + (f"; use {up}" if usable else "")
        )
    if not directory.is_dir():
        raise ModelError(f"{directory}: no such run directory")
    if directory.name.startswith(CHECKPOINT_PREFIX) and is_run_dir(up):
        # a checkpoint folder loads as its run with --checkpoint: the labels are in the run's files
        if checkpoint is not None:
            raise ModelError(
                f"{directory}: is a checkpoint already; drop --checkpoint, or give the run "
                f"{up} with --checkpoint {checkpoint}"
            )
        directory, checkpoint = up, directory.name
    if not is_run_dir(directory):
        raise ModelError(f"{directory}: not a bertfit run directory (no {RUN_CONFIG})")
    return directory, checkpoint


def _backend_forward(
    directory: Path,
    backend: str,
    checkpoint: str | None,
    onnx_file: str | None,
    device: torch.device,
) -> Forward | None:
    """None for the PyTorch model; for ``onnx`` the exported graph under onnxruntime."""
    if backend == "torch":
        return None
    if backend != "onnx":
        raise ModelError(f"backend must be torch or onnx, got {backend!r}")
    if checkpoint is not None:
        raise ModelError("--backend onnx runs the exported final model; drop --checkpoint")
    from bertfit.inference.onnx import onnx_forward

    return onnx_forward(directory, onnx_file, device)


def _lean_forward(weights: Path, device: torch.device) -> Forward | None:
    """A plain BERT classifier's forward without transformers (``models/lean_classifier.py``):
    the same logits, and a one-sentence ``bertfit predict`` in about half the time."""
    from bertfit.models.lean_classifier import load_lean_classifier

    model = load_lean_classifier(weights)
    if model is None:
        return None
    return torch_forward(model.to(device), device, pick_precision("auto", device), lean=True)


def _unfinished_message(directory: Path) -> str:
    from bertfit.training.checkpoint import list_checkpoints

    names = [c.path.name for c in list_checkpoints(directory)]
    if not names:
        return f"{directory}: the run did not finish (no {RESULTS}) and has no checkpoint; train it again"
    return (
        f"{directory}: the run did not finish (no {RESULTS}); resume it with 'bertfit train "
        f"--resume {directory}', or use a checkpoint with --checkpoint best|last ({', '.join(names)})"
    )


def _checkpoint_results(state: dict, labels: list[str]) -> dict:
    """What results.json would say, from a checkpoint's trainer state."""
    results = {"dev": state.get("dev", {}), "checkpoint_step": state.get("step")}
    # the weights are the model as it was at the step: the thresholds tuned at the latest
    # evaluation go with them (for the best checkpoint, those of the best model)
    cut = state.get("last_thresholds") or state.get("thresholds")
    if cut is not None:
        results["thresholds"] = dict(zip(labels, cut))
    return results
