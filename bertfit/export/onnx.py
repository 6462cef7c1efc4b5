"""``bertfit export RUN --format onnx``: the run's model as an ONNX graph, checked against PyTorch.

The folder (``RUN/onnx/`` unless ``--output`` says otherwise) holds ``model.onnx`` (fp32, inputs
``input_ids``/``attention_mask``/``token_type_ids`` with dynamic batch and sequence axes; output
``logits``, or for a bi-encoder ``pooled`` and ``sentence_embedding`` with the pooling and
normalisation inside the graph), with ``--quantize int8`` also ``model_quantized.onnx``, the
tokenizer files, ``config.json`` and ``export.json`` (what was checked, and the sha256 of the
weights it was made from, so that ``--backend onnx`` refuses a stale export). The folder is
written under a temporary name beside its place and renamed there only once every check passed.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bertfit import __version__
from bertfit.config.commands import EvaluateConfig, ExportConfig
from bertfit.data.packing import Packed, collate
from bertfit.errors import ConfigError, ModelError
from bertfit.export.hf import MODEL_CONFIG, TOKENIZER_FILES, _finished_run, replace_folder
from bertfit.files import publish_tree, temporary_dir, write_json
from bertfit.inference.embed import open_embedder
from bertfit.inference.onnx import (
    EXPORT_RECORD,
    INPUT_NAMES,
    ONNX_MODEL,
    QUANTIZED_MODEL,
    WEIGHTS,
    OnnxLogits,
    OnnxModel,
    open_session,
    read_export_record,
    require_package,
    weights_sha256,
)
from bertfit.inference.run import Run, load
from bertfit.models.pooling import Pooling, pool
from bertfit.rundir import RunMeta
from bertfit.runtime import quiet_transformers

LIMIT = 1e-3  # the largest |onnx - torch| output difference an fp32 export may have
OPSET = 17  # LayerNormalization is one operator from 17 on
# inputs of varied lengths for the check: a padded batch, and each alone (other shapes)
SAMPLE_TEXTS = [
    "a great film",
    "the plot was long and the ending awful, but the music and the cast were very good",
    "one",
    "it is a story of an old actor and a new song",
    " ".join(["this scene is rather long"] * 120),  # truncated at the run's max length
]


def export_onnx(config: ExportConfig) -> dict:
    """Export the finished run ``config.run_dir`` to ONNX in ``config.destination()``; returns
    what ``export.json`` records, plus ``output`` (the folder).

    Example: ``export_onnx(ExportConfig(run_dir="runs/sst2", format="onnx", quantize="int8"))``,
    then ``bertfit.load("runs/sst2", backend="onnx").predict(["a witty movie"])``.
    """
    config.validate()
    run_dir, output = Path(config.run_dir), config.destination()
    meta = _finished_run(run_dir)
    check_output(run_dir, output, config.overwrite)
    for package in ("onnx", "onnxruntime"):
        require_package(package, "--format onnx")
    if config.data is not None and meta.is_embedding:
        raise ConfigError(
            f"--data: scoring before and after quantising is for classifier runs; {run_dir} is "
            "a bi-encoder run (its int8 vector difference is reported without it)"
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_dir(output.parent, f".{output.name}.")
    try:
        record = _write_export(config, run_dir, meta, tmp)
        publish_tree(tmp)
        replace_folder(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**record, "output": str(output)}


def check_output(run_dir: Path, output: Path, overwrite: bool) -> None:
    """--output may be inside the run (RUN/onnx), but never the run, around it, or one of the
    run's own folders; an existing non-empty folder is replaced only with --overwrite."""
    where, run = output.resolve(), run_dir.resolve()
    if where == run or run.is_relative_to(where):
        raise ConfigError(f"--output {output}: must not be the run directory {run_dir} or hold it")
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {output}: exists and is not a directory")
    if not output.is_dir() or not any(output.iterdir()):
        return
    if where.is_relative_to(run) and read_export_record(output) is None:
        raise ConfigError(
            f"--output {output}: a folder of the run that is not an ONNX export; choose another"
        )
    if not overwrite:
        raise ConfigError(
            f"--output {output}: directory exists and is not empty; pass --overwrite to replace it"
        )


def _write_export(config: ExportConfig, run_dir: Path, meta: RunMeta, tmp: Path) -> dict:
    """Every file of the export into ``tmp``; the record that goes into export.json."""
    sha256 = weights_sha256(run_dir)
    graph, batches, run = _graph_and_samples(run_dir, meta)
    if config.data is not None:  # a wrong column or label is found before the minutes of work
        _read_scored_data(run, config.data)
    record = {
        "format": "onnx",
        "bertfit_version": __version__,
        "kind": "embedding" if meta.is_embedding else "classifier",
        "outputs": list(graph.outputs),
        "dynamic_axes": ["batch", "sequence"],
        "weights": {"file": WEIGHTS, "sha256": sha256},
        **(
            {"pooling": meta.pooling}
            if meta.is_embedding
            else {"problem": meta.problem, "labels": meta.labels}
        ),
        **export_checked(graph, batches, tmp / ONNX_MODEL),
    }
    names = [ONNX_MODEL]
    if config.quantize == "int8":
        record["quantized"] = quantize_int8(graph, batches, tmp / ONNX_MODEL, tmp / QUANTIZED_MODEL)
        names.append(QUANTIZED_MODEL)
    if config.data is not None:
        record["metric"] = score_before_after(run, config.data, tmp)
    names += _copy_run_files(run_dir, tmp)
    record["files"] = [*names, EXPORT_RECORD]
    write_json(tmp / EXPORT_RECORD, record)
    return record


class LogitsGraph(nn.Module):
    """What is exported for a classifier run: the three inputs in, ``logits`` out."""

    outputs = ("logits",)

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.types = model, _takes_token_types(model)

    def forward(self, input_ids, attention_mask, token_type_ids) -> torch.Tensor:
        types = {"token_type_ids": token_type_ids} if self.types else {}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **types).logits


class EmbeddingGraph(nn.Module):
    """What is exported for a bi-encoder run: the encoder, its pooling, and the normalisation
    the pooling declares (``sentence_embedding``, what ``Embedder.encode`` gives by default)."""

    outputs = ("pooled", "sentence_embedding")

    def __init__(self, encoder: nn.Module, pooling: Pooling) -> None:
        super().__init__()
        self.encoder, self.mode, self.normalize = encoder, pooling.mode, pooling.normalize
        self.types = _takes_token_types(encoder)

    def forward(self, input_ids, attention_mask, token_type_ids) -> tuple[torch.Tensor, ...]:
        types = {"token_type_ids": token_type_ids} if self.types else {}
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, **types
        ).last_hidden_state
        pooled = pool(hidden, attention_mask, self.mode)
        # a copy when not normalised: two graph outputs cannot be one value
        return pooled, F.normalize(pooled, dim=-1) if self.normalize else pooled.clone()


def _takes_token_types(model: nn.Module) -> bool:
    """DistilBERT-like encoders have no segment embeddings: their graph has no token_type_ids."""
    return "token_type_ids" in inspect.signature(model.forward).parameters


def _graph_and_samples(run_dir: Path, meta: RunMeta) -> tuple[nn.Module, list[dict], Run | None]:
    """The module to export (fp32, eval mode, CPU), the sample batches to check it on, and the
    loaded run (a classifier's ``Run``, for --data; None for a bi-encoder)."""
    if meta.is_embedding:
        embedder = open_embedder(str(run_dir), "cpu", "fp32")
        graph = EmbeddingGraph(_padding_safe(embedder.model), embedder.pooling)
        return graph.eval(), sample_batches(embedder.pack(SAMPLE_TEXTS), _pad(embedder)), None
    run = load(run_dir, "cpu")
    pairs = SAMPLE_TEXTS[1:] + SAMPLE_TEXTS[:1] if run.is_pair else None
    batches = sample_batches(run.pack(SAMPLE_TEXTS, pairs), _pad(run))
    return LogitsGraph(_padding_safe(run.model)).eval(), batches, run


def _pad(loaded) -> int:
    return loaded.tokenizer.pad_token_id


def _padding_safe(model: nn.Module) -> nn.Module:
    """The model in fp32 eval mode with an attention that takes a padding mask in the graph
    (sdpa or eager; not flash attention, which exists on GPUs only)."""
    if getattr(model.config, "_attn_implementation", "eager") not in ("sdpa", "eager"):
        model.set_attn_implementation("sdpa")
    return model.float().eval()


def sample_batches(packed: Packed, pad_id: int) -> list[dict[str, torch.Tensor]]:
    """All samples in one padded batch, then each on its own: several batch sizes and lengths."""
    every = np.arange(len(packed))
    alone = [collate(packed, every[i : i + 1], pad_id) for i in every]
    return [collate(packed, every, pad_id), *alone]


def export_checked(graph: nn.Module, batches: list[dict], path: Path) -> dict:
    """Export ``graph`` to ``path`` and check it against PyTorch on ``batches``: the TorchScript
    exporter first (fast), the dynamo one where that fails or gives a graph that disagrees."""
    problems = []
    for exporter in ("torchscript", "dynamo"):
        try:
            export_graph(graph, batches[0], path, exporter)
        except Exception as err:  # an exporter missing, or an operator it cannot write
            problems.append(f"{exporter}: {type(err).__name__}: {_first_line(err)}")
            continue
        model = open_session(path)
        diff = largest_difference(graph, model, batches)
        if diff <= LIMIT:
            # the inputs the graph declares (an encoder without segments has no token_type_ids)
            found = {"inputs": model.inputs, "opset": _opset(path), "max_abs_diff": diff}
            return {"exporter": exporter, **found}
        problems.append(f"{exporter}: largest |onnx - torch| difference {diff:.1e}")
    raise ModelError(
        f"no correct ONNX graph: {'; '.join(problems)} (limit {LIMIT:.0e}); nothing was written"
    )


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [""])[0][:200]


def export_graph(graph: nn.Module, sample: dict, path: Path, exporter: str) -> None:
    """``torch.onnx.export`` with dynamic ``batch`` and ``sequence`` axes on every input."""
    args = tuple(sample[name] for name in INPUT_NAMES)
    common = {"input_names": list(INPUT_NAMES), "output_names": list(graph.outputs)}
    with warnings.catch_warnings(), quiet_transformers():
        warnings.simplefilter("ignore")  # tracer and deprecation notes are not for users
        if exporter == "torchscript":
            axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
            axes |= {name: {0: "batch"} for name in graph.outputs}
            torch.onnx.export(
                graph, args, str(path), dynamo=False, opset_version=OPSET, dynamic_axes=axes,
                do_constant_folding=True, **common,
            )  # fmt: skip
        else:
            batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
            shapes = {name: {0: batch, 1: sequence} for name in INPUT_NAMES}
            torch.onnx.export(
                graph, args, str(path), dynamo=True, opset_version=max(OPSET, 18),
                dynamic_shapes=shapes, external_data=False, verbose=False, **common,
            )  # fmt: skip
    graph.eval()  # the exporters put back the mode they found; keep it fp32 eval whatever it was


def _opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


@torch.inference_mode()
def largest_difference(graph: nn.Module, model: OnnxModel, batches: list[dict]) -> float:
    """The largest |onnx - torch| over every output of every batch, PyTorch in fp32."""
    largest = 0.0
    for batch in batches:
        expected = graph(*(batch[name] for name in INPUT_NAMES))
        expected = expected if isinstance(expected, tuple) else (expected,)
        for name, want in zip(graph.outputs, expected):
            got = model.run(batch, name)
            if got.shape != tuple(want.shape):
                return float("inf")
            largest = max(largest, float(np.abs(got - want.numpy()).max()))
    return largest


def quantize_int8(graph: nn.Module, batches: list[dict], source: Path, target: Path) -> dict:
    """Dynamic int8 quantisation: int8 weights with one scale per output channel, activations
    quantised at run time; reports its largest difference from PyTorch (not checked: int8 is
    expected to differ).

    Measured on an all-MiniLM-L6-v2 SST-2 classifier (872 dev sentences): per-channel scales
    keep 98.6% of the fp32 predictions (accuracy 0.7913 -> 0.7959), one scale per tensor 96.0%
    (0.7810); quantising the embedding tables too (onnxruntime's default operators, not only
    MatMul) loses nothing and makes the file 23 MB instead of 59 (fp32: 91).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_root_logger():
        quantize_dynamic(source, target, per_channel=True, weight_type=QuantType.QInt8)
    diff = largest_difference(graph, open_session(target), batches)
    settings = {"weight_type": "QInt8", "per_channel": True, "reduce_range": False}
    return {"file": QUANTIZED_MODEL, **settings, "max_abs_diff": diff}


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime's quantiser logs every tensor it skips on the root logger; only errors of it
    are for users. The root level is put back afterwards."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _scoring_config(run: Run, data: str) -> EvaluateConfig:
    return EvaluateConfig(run_dir=str(run.directory), data=data, backend="onnx")


def _read_scored_data(run: Run, data: str) -> None:
    from bertfit.data.labels import REGRESSION, check_known_labels
    from bertfit.evaluation.score import evaluation_examples

    examples = evaluation_examples(_scoring_config(run, data), run)
    if run.problem != REGRESSION:
        check_known_labels(examples, run.labels)


def score_before_after(run: Run, data: str, folder: Path) -> dict:
    """The run's main metric on the labelled file ``data`` with the fp32 graph and the int8 one
    (scored as 'bertfit evaluate --backend onnx' scores them)."""
    from bertfit.evaluation.score import evaluate

    config = _scoring_config(run, data)
    metric = run.results.get("metric") or _default_metric(run.problem)
    scores = {"name": metric, "data": data}
    for label, name in (("fp32", ONNX_MODEL), ("int8", QUANTIZED_MODEL)):
        forward = OnnxLogits(open_session(folder / name))
        scored = evaluate(config, run=replace(run, backend="onnx", forward=forward))
        scores[label] = float(scored[metric])
    return scores


def _default_metric(problem: str) -> str:
    return {"regression": "spearman", "multi_label_classification": "micro_f1"}.get(
        problem, "accuracy"
    )


def _copy_run_files(run_dir: Path, tmp: Path) -> list[str]:
    """config.json (labels in id2label) and the tokenizer files, so the folder tokenises alone."""
    names = [MODEL_CONFIG, *(n for n in TOKENIZER_FILES if (run_dir / n).is_file())]
    for name in names:
        shutil.copyfile(run_dir / name, tmp / name)
    return names
