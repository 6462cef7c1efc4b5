"""Search spaces for ``bertfit tune``: which ``train`` options a trial changes, and over what range.

A space comes from a short spec (``lr=1e-5:3e-4:log,epochs=1:4,batch_size=16|32``), a YAML or
JSON file, a named space (``bert-paper``: the grid of Devlin et al. 2019, appendix A.3) or the
default for the run's objective. Every name is a ``TrainConfig`` field, so a trial is a normal
training run with some options replaced. Parsing needs no Optuna; ``suggest`` asks any object with
Optuna's ``suggest_*`` methods.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bertfit.config.train import TrainConfig
from bertfit.errors import ConfigError

Value = int | float | str | bool

# names users type for the fields they mean
ALIASES = {
    "learning_rate": "lr",
    "warmup": "warmup_ratio",
    "layer_decay": "layer_lr_decay",
    "batch": "batch_size",
}

# Devlin et al. 2019, A.3: batch {16, 32} x lr {5e-5, 3e-5, 2e-5} x epochs {2, 3, 4}
NAMED_SPACES = {"bert-paper": "batch_size=16|32,lr=5e-5|3e-5|2e-5,epochs=2|3|4"}


@dataclass(frozen=True)
class Param:
    """One option a trial sets: a range (``low`` to ``high``, on a log scale with ``log``) or a
    list of ``choices``."""

    name: str
    kind: Literal["float", "int", "choice"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Value, ...] = ()

    def describe(self) -> str:
        if self.kind == "choice":
            return f"{self.name}={'|'.join(str(c) for c in self.choices)}"
        low, high = (int(v) if self.kind == "int" else v for v in (self.low, self.high))
        return f"{self.name}={low:g}:{high:g}{':log' if self.log else ''}"


@dataclass(frozen=True)
class Space:
    params: tuple[Param, ...]
    source: str  # where it came from, for messages and the report

    def describe(self) -> str:
        return ",".join(p.describe() for p in self.params)

    def grid(self) -> dict[str, list[Value]] | None:
        """The points of a grid search, when every parameter is a list of choices."""
        if all(p.kind == "choice" for p in self.params):
            return {p.name: list(p.choices) for p in self.params}
        return None

    def grid_size(self) -> int | None:
        grid = self.grid()
        if grid is None:
            return None
        size = 1
        for values in grid.values():
            size *= len(values)
        return size


def suggest(space: Space, trial: Any) -> dict[str, Value]:
    """The options one trial runs with, asked of an Optuna trial (or anything with its methods)."""
    chosen: dict[str, Value] = {}
    for p in space.params:
        if p.kind == "float":
            chosen[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log)
        elif p.kind == "int":
            chosen[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log)
        else:
            chosen[p.name] = trial.suggest_categorical(p.name, list(p.choices))
    return chosen


def default_space(config: TrainConfig, fixed: frozenset[str] = frozenset()) -> Space:
    """The search space when none is given, for a config whose defaults are resolved.

    The learning rate spans a factor of 5 either side of the encoder's measured default, on a log
    scale; bi-encoders (``--objective``) train at one rate for all layers, so no layer decay.
    Options in ``fixed`` (the ones the user set, such as ``--epochs 1``) are left as given.
    """
    lr = config.lr or 3e-5
    spec = {
        "lr": f"{lr / 5:.3g}:{lr * 5:.3g}:log",
        "epochs": "1:4",
        "batch_size": "16|32|64",
        "warmup_ratio": "0:0.2",
        "layer_lr_decay": "0.7:1.0",
        "weight_decay": "0:0.1",
        "dropout": "0:0.2",
        "seed": "0:10000",
    }
    if config.objective is not None:
        del spec["layer_lr_decay"]
    chosen = [f"{name}={value}" for name, value in spec.items() if name not in fixed]
    if not chosen:
        raise ConfigError(
            f"the default search space is empty: {', '.join(sorted(fixed & set(spec)))} are all "
            "set on the command line; leave one out or give --space"
        )
    return parse_spec(",".join(chosen), source="default")


def load_space(
    given: str | None, config: TrainConfig, fixed: frozenset[str] = frozenset()
) -> Space:
    """The space ``--space`` names: a file, a named space, a spec; the default when not given
    (without the options in ``fixed``)."""
    if given is None or not given.strip():
        if given is not None:
            raise ConfigError(
                "--space is empty: give a file, a spec such as lr=1e-5:3e-4:log, "
                f"or one of {', '.join(NAMED_SPACES)}"
            )
        return default_space(config, fixed)
    if given in NAMED_SPACES:
        return parse_spec(NAMED_SPACES[given], source=given)
    path = Path(given)
    if path.suffix.lower() in (".yaml", ".yml", ".json") or path.is_file():
        return read_space_file(path)
    return parse_spec(given, source="--space")


def read_space_file(path: Path) -> Space:
    """A YAML or JSON mapping of option to range: ``lr: {low: 1e-5, high: 3e-4, log: true}``,
    ``batch_size: [16, 32]``, or a spec string per option (``epochs: "1:4"``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the search space ({err.strerror})") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except (ValueError, ImportError) as err:
        raise ConfigError(f"{path}: not a valid search space file ({first_line(err)})") from None
    except Exception as err:  # yaml.YAMLError, without importing yaml for JSON files
        raise ConfigError(f"{path}: not a valid search space file ({first_line(err)})") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{path}: the search space is empty; expected option: range entries")
    params = [_param_from_entry(name, value, str(path)) for name, value in data.items()]
    return _checked(params, str(path))


def parse_spec(spec: str, source: str = "--space") -> Space:
    """``name=low:high[:log]`` ranges and ``name=a|b|c`` choices, separated by commas."""
    params = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not sep or not value.strip():
            raise ConfigError(
                f"{source}: '{item}' is not name=low:high[:log] or name=a|b|c "
                "(for example lr=1e-5:3e-4:log,batch_size=16|32)"
            )
        params.append(_param_from_text(name.strip(), value.strip(), source))
    return _checked(params, source)


def _param_from_entry(name: str, value: Any, source: str) -> Param:
    field = _field_name(str(name), source)
    if isinstance(value, str):
        return _param_from_text(field, value, source)
    if isinstance(value, list):
        return _choices(field, [_typed(field, v, source) for v in value], source)
    if isinstance(value, dict):
        unknown = set(value) - {"low", "high", "log"}
        if unknown or not {"low", "high"} <= set(value):
            raise ConfigError(
                f"{source}: {name} needs low and high (and optionally log), got {sorted(value)}"
            )
        low, high = (_typed(field, value[k], source) for k in ("low", "high"))
        return _range(field, low, high, bool(value.get("log", False)), source)
    return _choices(field, [_typed(field, value, source)], source)


def _param_from_text(name: str, value: str, source: str) -> Param:
    field = _field_name(name, source)
    if "|" in value:
        return _choices(field, [_typed(field, v.strip(), source) for v in value.split("|")], source)
    parts = value.split(":")
    if len(parts) in (2, 3):
        log = len(parts) == 3
        if log and parts[2].strip() != "log":
            raise ConfigError(f"{source}: {name}={value}: the third part can only be 'log'")
        low, high = (_typed(field, v.strip(), source) for v in parts[:2])
        return _range(field, low, high, log, source)
    if len(parts) > 3:
        raise ConfigError(f"{source}: {name}={value} is not low:high or low:high:log")
    return _choices(field, [_typed(field, value, source)], source)


def _range(name: str, low: Value, high: Value, log: bool, source: str) -> Param:
    kind = _field_kind(name)
    if kind not in ("int", "float"):
        raise ConfigError(f"{source}: {name} takes a list of choices (a|b), not a range")
    if not low < high:
        raise ConfigError(f"{source}: {name}'s range is empty: low {low} is not below high {high}")
    if log and low <= 0:
        raise ConfigError(f"{source}: {name}: a log range needs low > 0, got {low}")
    return Param(name, kind, low=low, high=high, log=log)


def _choices(name: str, values: list[Value], source: str) -> Param:
    if not values:
        raise ConfigError(f"{source}: {name} has no choices")
    if len(set(values)) != len(values):
        raise ConfigError(f"{source}: {name} lists a choice twice: {values}")
    return Param(name, "choice", choices=tuple(values))


def _checked(params: list[Param], source: str) -> Space:
    if not params:
        raise ConfigError(f"{source}: the search space is empty")
    names = [p.name for p in params]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"{source}: {', '.join(twice)} given twice in the search space")
    space = Space(tuple(params), source)
    for p in space.params:  # every value must make a valid training config on its own
        for value in p.choices or (p.low, p.high):
            _check_value(p.name, value, source)
    return space


def _check_value(name: str, value: Value, source: str) -> None:
    try:
        problems = dataclasses.replace(TrainConfig(), **{name: value}).option_problems()
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{source}: {name}={value}: {first_line(err)}") from None
    own = [p for p in problems if "--" + name.replace("_", "-") in p]
    if own:
        raise ConfigError(f"{source}: {name}={value}: {own[0]}")


# ---- TrainConfig's fields ------------------------------------------------------------------------

# options a search must not change: where data, model and outputs are, and how the run is run
NOT_TUNABLE = {
    "train", "dev", "task", "output", "data_dir", "download", "train_split", "eval_split",
    "text_column", "pair_column", "label_column", "label_separator", "header", "delimiter",
    "quoting", "label_names", "as_classes", "train_limit", "dev_fraction", "skip_bad_rows",
    "model", "regression", "multi_label", "metric", "resume", "overwrite", "save_steps",
    "save_total_limit", "keep_checkpoints", "tensorboard", "device", "threads", "nproc",
    "max_restarts", "ddp_backend", "cache_dir", "progress", "eval_steps", "split_seed",
}  # fmt: skip


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _field_name(name: str, source: str) -> str:
    field = name.strip().lstrip("-").replace("-", "_")
    field = ALIASES.get(field, field)
    types = _field_types()
    if field in types and field not in NOT_TUNABLE:
        return field
    if field in NOT_TUNABLE:
        raise ConfigError(f"{source}: {name} is not searched over (set it as a train option)")
    tunable = sorted(set(types) - NOT_TUNABLE) + sorted(ALIASES)
    close = difflib.get_close_matches(field, tunable, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise ConfigError(f"{source}: {name} is not a train option{hint}")


def _field_kind(name: str) -> str:
    """int, float, bool or choice (a Literal or a string) for a TrainConfig field."""
    hint = _field_types()[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    if bool in args:
        return "bool"
    if int in args:
        return "int"
    if float in args:
        return "float"
    return "choice"


def _typed(name: str, value: Any, source: str) -> Value:
    """``value`` (text from a spec, or a YAML/JSON scalar) as the field's type."""
    kind = _field_kind(name)
    text = str(value).strip()
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if text.lower() in ("true", "false", "1", "0", "yes", "no"):
                return text.lower() in ("true", "1", "yes")
            raise ValueError
        if kind == "int":
            number = float(text)
            if number != int(number):
                raise ValueError
            return int(number)
        if kind == "float":
            return float(text)
    except ValueError:
        raise ConfigError(f"{source}: {name}: '{text}' is not {_article(kind)} {kind}") from None
    literal = [a for a in typing.get_args(_field_types()[name]) if isinstance(a, str)]
    if literal and text not in literal:
        raise ConfigError(f"{source}: {name}: '{text}' is not one of {', '.join(literal)}")
    return text


def _article(kind: str) -> str:
    return "an" if kind[0] in "aeiou" else "a"


def first_line(err: BaseException) -> str:
    """An error's first line, or its type's name when it has no text."""
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
