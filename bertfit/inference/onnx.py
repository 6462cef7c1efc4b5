"""``--backend onnx``: a run's exported ONNX graph under onnxruntime, as a forward pass.

``bertfit export RUN --format onnx`` writes ``RUN/onnx/``: ``model.onnx`` (and with ``--quantize
int8`` ``model_quantized.onnx``), the tokenizer files and ``export.json``, which records the
sha256 of the weights the graph was made from. ``onnx_forward`` gives a classifier run's logits,
``onnx_embedding_forward`` a bi-encoder run's sentence vectors; both refuse a graph made from
other weights than the run holds now.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bertfit.errors import ConfigError, ModelError
from bertfit.models.encoders import one_line, sha256_file

log = logging.getLogger("bertfit")

ONNX_DIR = "onnx"  # inside the run: where 'bertfit export --format onnx' writes by default
ONNX_MODEL = "model.onnx"
QUANTIZED_MODEL = "model_quantized.onnx"
EXPORT_RECORD = "export.json"
WEIGHTS = "model.safetensors"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
INSTALL = "pip install 'bertfit[onnx]'"


def require_package(name: str, what: str = "--backend onnx") -> Any:
    """Import ``name`` (onnxruntime, onnx, ...) or say in one line how to install it."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise ConfigError(f"{what} needs {name}: {INSTALL}") from None


def weights_sha256(run_dir: Path) -> str:
    """The sha256 of the run's ``model.safetensors``: what an export records and is checked by."""
    weights = run_dir / WEIGHTS
    if not weights.is_file():
        raise ModelError(f"{run_dir}: incomplete run, missing {WEIGHTS}")
    return sha256_file(weights)


class OnnxModel:
    """An ONNX graph in an onnxruntime session: a padded batch in, one named output out."""

    def __init__(self, path: Path, session: Any) -> None:
        self.path = path
        self.session = session
        # a graph need not declare every input (no token_type_ids for some encoders)
        self.inputs = [item.name for item in session.get_inputs()]
        self.outputs = [item.name for item in session.get_outputs()]

    def run(self, batch: dict[str, torch.Tensor], output: str) -> np.ndarray:
        feed = {name: _int64(batch[name]) for name in self.inputs}
        (rows,) = self.session.run([output], feed)
        return np.asarray(rows, dtype=np.float32)

    def require_output(self, name: str, kind: str) -> None:
        if name not in self.outputs:
            raise ModelError(
                f"{self.path}: has no {name!r} output (it has {', '.join(self.outputs)}); "
                f"not the export of a {kind} run"
            )


def _int64(values: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.ascontiguousarray(values, dtype=np.int64)


def open_session(path: Path, device: torch.device | None = None) -> OnnxModel:
    """An onnxruntime session for ``path``: CUDA when ``device`` is a GPU and onnxruntime has the
    CUDA provider, else the CPU with as many threads as torch uses; all graph optimisations."""
    ort = require_package("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: its placement notes are not for users
    providers = ["CPUExecutionProvider"]
    if device is not None and device.type == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        else:
            log.info("onnxruntime has no CUDA provider here (pip install onnxruntime-gpu); CPU")
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise ModelError(f"{path}: cannot load the ONNX model ({one_line(err)})") from None
    return OnnxModel(path, session)


def find_onnx_model(run_dir: Path, onnx_file: str | None = None) -> Path:
    """``onnx_file`` (a name inside ``RUN/onnx``, or a path), else the run's quantised model if
    it has one, else its ``model.onnx``."""
    folder = run_dir / ONNX_DIR
    if onnx_file is not None:
        for path in (folder / onnx_file, Path(onnx_file)):  # an absolute path is taken as it is
            if path.is_file():
                return path
        raise ModelError(f"{onnx_file}: no such ONNX file (nor in {folder})")
    for name in (QUANTIZED_MODEL, ONNX_MODEL):
        if (folder / name).is_file():
            return folder / name
    raise ModelError(
        f"{run_dir}: no ONNX model in {folder}; make one with 'bertfit export {run_dir} --format onnx'"
    )


def read_export_record(folder: Path) -> dict | None:
    """``export.json`` of an export folder; None where there is none."""
    path = folder / EXPORT_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        raise ModelError(f"{path}: cannot be read ({err}); export the run again") from None
    return record


def check_made_from(run_dir: Path, path: Path, explicit: bool) -> dict:
    """The export record beside ``path``, after checking it was made from the run's weights.

    A graph the user named (``explicit``) may come without a record: it is used, with a note.
    """
    record = read_export_record(path.parent)
    if record is None:
        if not explicit:
            raise ModelError(
                f"{path.parent}: no {EXPORT_RECORD}, so nothing says which weights the graph was "
                f"made from; export again with 'bertfit export {run_dir} --format onnx --overwrite'"
            )
        log.info(f"{path}: no {EXPORT_RECORD} beside it; not checked against {run_dir}'s weights")
        return {}
    made_from = (record.get("weights") or {}).get("sha256")
    if made_from != weights_sha256(run_dir):
        raise ModelError(
            f"{path}: exported from other weights than {run_dir}/{WEIGHTS} holds now; export "
            f"again with 'bertfit export {run_dir} --format onnx --overwrite'"
        )
    return record


def _checked_model(run_dir: Path, onnx_file: str | None, device: torch.device) -> OnnxModel:
    require_package("onnxruntime")
    path = find_onnx_model(run_dir, onnx_file)
    check_made_from(run_dir, path, explicit=onnx_file is not None)
    model = open_session(path, device)
    log.info(f"onnx backend: {path}")
    return model


@dataclass
class OnnxLogits:
    """A classifier's ``Forward``: the ``logits`` output of its exported graph."""

    model: OnnxModel

    @property
    def path(self) -> Path:
        return self.model.path

    def __call__(self, batch: dict[str, torch.Tensor]) -> np.ndarray:
        return self.model.run(batch, "logits")


@dataclass
class OnnxEmbedding:
    """A bi-encoder's vectors from its exported graph: ``pooled`` (the model's pooling) or
    ``sentence_embedding`` (normalised when the model's pooling says so)."""

    model: OnnxModel
    normalized: bool  # whether sentence_embedding is L2-normalised

    @property
    def path(self) -> Path:
        return self.model.path

    def __call__(self, batch: dict[str, torch.Tensor], normalize: bool) -> np.ndarray:
        if normalize == self.normalized:
            return self.model.run(batch, "sentence_embedding")
        pooled = self.model.run(batch, "pooled")
        if not normalize:
            return pooled
        # as torch.nn.functional.normalize: divide by the norm, never by less than 1e-12
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.maximum(norms, 1e-12)


def onnx_forward(run_dir: Path, onnx_file: str | None, device: torch.device) -> OnnxLogits:
    """The logits of a classifier run's exported graph, as ``Run.forward`` takes them.

    Example: ``onnx_forward(Path("runs/sst2"), None, torch.device("cpu"))(batch)`` where
    ``batch`` is what ``bertfit.data.packing.collate`` gives.
    """
    model = _checked_model(Path(run_dir), onnx_file, device)
    model.require_output("logits", "classifier")
    return OnnxLogits(model)


def onnx_embedding_forward(
    run_dir: Path, onnx_file: str | None, device: torch.device, normalized: bool
) -> OnnxEmbedding:
    """A bi-encoder run's sentence vectors from its exported graph (pooling inside the graph);
    ``normalized``: whether the run's pooling L2-normalises (what ``sentence_embedding`` is)."""
    model = _checked_model(Path(run_dir), onnx_file, device)
    for name in ("pooled", "sentence_embedding"):
        model.require_output(name, "bi-encoder")
    return OnnxEmbedding(model, normalized)
