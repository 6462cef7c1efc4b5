"""What a mistyped command or option probably meant: the closest of the command's own options,
and the names that other fine-tuning tools (Hugging Face ``Trainer`` and ``run_glue.py``,
Simple Transformers) give to the same settings.

Only the messages are made here; ``main.py`` prints them with the command's usage.
"""

from __future__ import annotations

import difflib

# Another tool's option, lower case with dashes -> ours; the first one the command has is offered.
OTHER_NAMES: dict[str, tuple[str, ...]] = {
    "--learning-rate": ("--lr",),
    "--num-train-epochs": ("--epochs",),
    "--num-epochs": ("--epochs",),
    "--per-device-train-batch-size": ("--batch-size",),
    "--per-gpu-train-batch-size": ("--batch-size",),
    "--train-batch-size": ("--batch-size",),
    "--per-device-eval-batch-size": ("--batch-size",),
    "--eval-batch-size": ("--batch-size",),
    "--output-dir": ("--output",),
    "--outdir": ("--output",),
    "--out-dir": ("--output",),
    "--save-dir": ("--output",),
    "--overwrite-output-dir": ("--overwrite",),
    "--model-name-or-path": ("--model",),
    "--model-name": ("--model",),
    "--model-path": ("--model",),
    "--max-seq-length": ("--max-length",),
    "--max-seq-len": ("--max-length",),
    "--gradient-accumulation-steps": ("--grad-accum",),
    "--warmup-steps": ("--warmup-ratio",),
    "--fp16": ("--precision fp16",),
    "--bf16": ("--precision bf16",),
    "--no-cuda": ("--device cpu",),
    "--use-cpu": ("--device cpu",),
    "--train-file": ("--train",),
    "--validation-file": ("--dev", "--data"),
    "--eval-file": ("--dev", "--data"),
    "--dev-file": ("--dev", "--data"),
    "--test-file": ("--data",),
    "--task-name": ("--task",),
    "--dataset-name": ("--task",),
    "--max-train-samples": ("--train-limit",),
    "--metric-for-best-model": ("--metric",),
    "--resume-from-checkpoint": ("--resume",),
    "--manual-seed": ("--seed",),
    "--hidden-dropout-prob": ("--dropout",),
    "--evaluate-during-training-steps": ("--eval-steps",),
    "--use-early-stopping": ("--early-stopping-patience",),
    "--report-to": ("--tensorboard",),
    "--silent": ("--no-progress",),
    "--disable-tqdm": ("--no-progress",),
}

# Options of other tools that bertfit needs no flag for.
NOT_NEEDED: dict[str, str] = {
    "--do-train": "not needed: 'bertfit train' trains",
    "--do-eval": "not needed: 'bertfit train' scores the dev set as it trains; "
    "'bertfit evaluate RUN' scores a finished run",
    "--evaluate-during-training": "not needed: 'bertfit train' scores the dev set after every epoch",
    "--do-predict": "not needed: use 'bertfit predict RUN --input FILE'",
    "--load-best-model-at-end": "not needed: the run keeps its best dev model",
    "--num-labels": "not needed: the labels are read from the training data",
    "--version": "give it before the command: 'bertfit --version'",
}

# Other names for a command.
COMMAND_NAMES: dict[str, str] = {
    "fit": "train",
    "finetune": "train",
    "fine-tune": "train",
    "test": "evaluate",
    "score": "evaluate",
    "infer": "predict",
    "classify": "predict",
    "encode": "embed",
    "retrieve": "search",
    "download": "data",
}


def normalize(option: str) -> str:
    """``--Learning_Rate=1e-4`` -> ``--learning-rate``: how we compare an option with ours."""
    name = option.split("=", 1)[0].lstrip("-").lower().replace("_", "-")
    return "--" + name


def is_option(token: str) -> bool:
    """An option-like token, not a value such as ``-1`` or ``-0.5``."""
    if len(token) < 2 or not token.startswith("-") or token == "--":
        return False
    try:
        float(token)
    except ValueError:
        return True
    return False


def close_options(option: str, options: list[str]) -> list[str]:
    """Up to three of ``options`` the user probably meant by ``option`` (best first)."""
    name = normalize(option)
    if name in options:  # only the spelling differs: --batch_size, -lr
        return [name]
    for target in OTHER_NAMES.get(name, ()):
        if target.split()[0] in options:
            return [target]
    prefixed = [o for o in options if len(name) >= 5 and o.startswith(name)]
    if prefixed:  # --epoch, --out, --batch: what abbreviations used to mean
        return prefixed[:3]
    # compared without the dashes, which would make any two options look alike
    names = {o[2:]: o for o in options}
    return [names[n] for n in difflib.get_close_matches(name[2:], list(names), n=3, cutoff=0.6)]


def or_list(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def option_hint(option: str, options: list[str]) -> str:
    """'did you mean --lr?', a note on why the option is not needed, or ''."""
    name = normalize(option)
    if name in NOT_NEEDED and name not in options:
        return NOT_NEEDED[name]
    close = close_options(option, options)
    return f"did you mean {or_list(close)}?" if close else ""


def unrecognized_message(extras: list[str], options: list[str], prog: str) -> str:
    """One line for the arguments a command did not recognise, with a suggestion for each option.

    Values that follow an unknown option are left out when an option is among the extras.
    """
    flags = [token for token in extras if is_option(token)]
    if not flags:
        spaces = " (quote a value that has spaces)" if len(extras) > 1 else ""
        plural = "s" if len(extras) > 1 else ""
        return f"unrecognized argument{plural} {' '.join(extras)}{spaces}; see '{prog} --help'"
    see = f"see '{prog} --help'"
    hints = [option_hint(flag, options) for flag in flags]
    if len(flags) == 1:
        return f"unrecognized argument {flags[0]}; {hints[0] or see}"
    parts = [f"{flag} ({hint})" if hint else flag for flag, hint in zip(flags, hints)]
    return f"unrecognized arguments {', '.join(parts)}; {see}"


def command_message(word: str, commands: list[str]) -> str:
    """One line for an unknown command, naming the command it most likely was."""
    name = word.lower()
    close = [COMMAND_NAMES[name]] if name in COMMAND_NAMES else []
    close += [c for c in commands if len(name) >= 3 and c.startswith(name)]
    close += difflib.get_close_matches(name, commands, n=3, cutoff=0.6)
    close = list(dict.fromkeys(close))[:3]
    if close:
        return f"unknown command {word!r}; did you mean {or_list(close)}?"
    return f"unknown command {word!r}; choose from {', '.join(commands)}"
