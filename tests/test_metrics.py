"""The metric helpers' numerics: a sigmoid that stays finite and silent for any logit."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pytest

from bertfit.evaluation.metrics import sigmoid


def naive_sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@contextlib.contextmanager
def numpy_warnings_are_errors():
    # under stays ignored: e^-1000 is below the smallest float, so rounding it to 0 is the answer
    with warnings.catch_warnings(), np.errstate(over="raise", divide="raise", invalid="raise"):
        warnings.simplefilter("error")
        yield


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_of_huge_logits_is_exact_and_silent(dtype):
    logits = np.array([[-1000.0, 0.0, 1000.0]], dtype=dtype)
    with numpy_warnings_are_errors():
        probabilities = sigmoid(logits)
    assert probabilities.tolist() == [[0.0, 0.5, 1.0]]
    assert probabilities.dtype == dtype and probabilities.shape == logits.shape


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-6), (np.float64, 1e-14)])
def test_sigmoid_matches_the_naive_form_in_the_normal_range(dtype, rtol):
    normal = np.linspace(-30, 30, 241, dtype=dtype)
    logits = np.concatenate([normal, np.array([-1000, 1000], dtype=dtype)]).reshape(-1, 1)
    with numpy_warnings_are_errors():  # the huge logits ride along and must not warn
        probabilities = sigmoid(logits)
        scalar = sigmoid(dtype(2.0))
    expected = naive_sigmoid(normal.reshape(-1, 1))
    np.testing.assert_allclose(probabilities[: len(normal)], expected, rtol=rtol, atol=0)
    assert probabilities.dtype == expected.dtype == dtype
    assert np.ndim(scalar) == 0 and scalar == pytest.approx(naive_sigmoid(dtype(2.0)), rel=rtol)
