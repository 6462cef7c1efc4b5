"""One typed config per command, shared by the CLI and the Python API."""

from bertfit.config.commands import (
    CompareConfig,
    DataConfig,
    EmbedConfig,
    EvaluateConfig,
    ExplainConfig,
    ExportConfig,
    PredictConfig,
    QuickstartConfig,
    ReportConfig,
    SearchConfig,
    SimilarityConfig,
    TasksConfig,
)
from bertfit.config.fields import DEFAULT_MODEL, PRECISIONS, TRUNCATIONS, config_fields
from bertfit.config.serve import ServeConfig
from bertfit.config.train import TrainConfig
from bertfit.config.tune import TuneConfig

__all__ = [
    "DEFAULT_MODEL",
    "PRECISIONS",
    "TRUNCATIONS",
    "CompareConfig",
    "DataConfig",
    "EmbedConfig",
    "EvaluateConfig",
    "ExplainConfig",
    "ExportConfig",
    "PredictConfig",
    "QuickstartConfig",
    "ReportConfig",
    "SearchConfig",
    "ServeConfig",
    "SimilarityConfig",
    "TasksConfig",
    "TrainConfig",
    "TuneConfig",
    "config_fields",
]
