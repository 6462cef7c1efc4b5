"""Request bodies (their schemas document ``/docs``) and turning their inputs into texts.

A body that does not match its schema is a 422; inputs of the wrong shape or empty texts are a
400 (``InputError``) that names the field, e.g. ``inputs[3]: empty text``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Text = str
PairList = list[str]


class PairInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str
    pair: str


class PredictRequest(BaseModel):
    """``inputs``: a text or a list of texts; for a pair run a ``[text, pair]`` or
    ``{"text", "pair"}``, or a list of them."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"inputs": "a gorgeous, witty, seductive movie"}]},
    )
    inputs: str | list[str] | PairInput | list[list[str] | PairInput] = Field(
        description="a text, a list of texts; pair runs: [text, pair], {text, pair} or a list"
    )


class ExplainRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"inputs": "a gorgeous, witty, seductive movie"}]},
    )
    inputs: str | list[str] | PairInput = Field(
        description="one text; pair runs: [text, pair] or {text, pair}"
    )
    steps: int = Field(50, ge=1, le=500, description="integrated-gradients steps")
    target: Literal["logit", "log-probability"] = Field(
        "logit", description="what integrated gradients attribute"
    )


class EmbedRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"inputs": ["A plane is taking off."]}]}
    )
    inputs: str | list[str] = Field(description="a text or a list of texts")
    normalize: bool | None = Field(None, description="L2-normalise [default: as the model does]")


class SimilarityInputs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source_sentence: str
    sentences: list[str]


class SimilarityRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "inputs": {
                        "source_sentence": "A plane is taking off.",
                        "sentences": ["An air plane is taking off.", "A man plays a flute."],
                    }
                }
            ]
        },
    )
    inputs: SimilarityInputs


class OpenAIEmbeddingRequest(BaseModel):
    """OpenAI's ``POST /v1/embeddings`` body (texts only; token-id inputs are refused)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"input": "A plane is taking off.", "model": "bertfit"}]}
    )
    input: str | list[str] | list[int] | list[list[int]]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


class InputError(ValueError):
    """Inputs of the wrong shape or content: a 400 naming the field."""

    def __init__(self, message: str, status: int = 400, kind: str = "invalid_input") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


def predict_inputs(
    value, is_pair: bool, max_inputs: int
) -> tuple[list[str], list[str] | None, bool]:
    """(texts, pairs, single) from a predict body's ``inputs``; ``single``: one input was sent."""
    if is_pair:
        single = _is_one_pair(value)
        items = [value] if single else value
        if not isinstance(items, list):
            raise InputError(
                'inputs: this run takes text pairs: send [text, pair], {"text": ..., "pair": ...} '
                "or a list of them"
            )
        limit_count(items, max_inputs)
        pairs = [
            _pair_of(item, f"inputs[{i}]" if not single else "inputs")
            for i, item in enumerate(items)
        ]
        return [a for a, _ in pairs], [b for _, b in pairs], single
    if isinstance(value, str):
        return [check_text(value, "inputs")], None, True
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(
            "inputs: this run takes single texts: send a text or a list of texts"
            + (" (a pair was sent)" if _is_one_pair(value) or isinstance(value, list) else "")
        )
    limit_count(value, max_inputs)
    return [check_text(v, f"inputs[{i}]") for i, v in enumerate(value)], None, False


def explain_inputs(value, is_pair: bool) -> tuple[str, str | None]:
    """(text, pair) of the one input an explain body names."""
    if is_pair:
        if not _is_one_pair(value):
            raise InputError(
                'inputs: this run takes a text pair: send [text, pair] or {"text", "pair"}'
            )
        return _pair_of(value, "inputs")
    if not isinstance(value, str):
        raise InputError("inputs: explain takes one text")
    return check_text(value, "inputs"), None


def text_inputs(value, max_inputs: int, name: str = "inputs") -> tuple[list[str], bool]:
    """(texts, single) from a text or a list of texts."""
    if isinstance(value, str):
        return [check_text(value, name)], True
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(f"{name}: send a text or a list of texts")
    limit_count(value, max_inputs, name)
    return [check_text(v, f"{name}[{i}]") for i, v in enumerate(value)], False


def check_text(value: str, name: str) -> str:
    if not value.strip():
        raise InputError(f"{name}: empty text; every input needs some text", kind="empty_input")
    return value


def limit_count(items: list, max_inputs: int, name: str = "inputs") -> None:
    if not items:
        raise InputError(f"{name}: empty list; send at least one input", kind="empty_input")
    if len(items) > max_inputs:
        raise InputError(
            f"{name}: {len(items)} inputs, more than the {max_inputs} one request may hold "
            "(--max-client-batch); split them",
            status=413,
            kind="too_many_inputs",
        )


def _is_one_pair(value) -> bool:
    if isinstance(value, (dict, PairInput)):
        return True
    return isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)


def _pair_of(item, name: str) -> tuple[str, str]:
    if isinstance(item, PairInput):
        item = {"text": item.text, "pair": item.pair}
    if isinstance(item, dict):
        if set(item) != {"text", "pair"} or not all(isinstance(v, str) for v in item.values()):
            raise InputError(f'{name}: a pair is {{"text": "...", "pair": "..."}}')
        a, b = item["text"], item["pair"]
    elif isinstance(item, list) and len(item) == 2 and all(isinstance(v, str) for v in item):
        a, b = item
    else:
        raise InputError(f"{name}: a pair is [text, pair], two texts")
    return check_text(a, f"{name}.text"), check_text(b, f"{name}.pair")
