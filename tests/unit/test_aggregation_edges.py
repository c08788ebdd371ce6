"""Aggregation's edges, pinned one by one (issue 18: each test kills a mutmut survivor).

Error messages users read, the JS-consensus weights against an independent formula, the
simplex of a zero vector without a warning, and spectral_weights' shape rules.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from fi_stream.aggregation import (
    aggregate,
    as_outputs,
    entropy,
    js_consensus,
    spectral_weights,
    to_simplex,
    trimmed_mean,
)
from fi_stream.errors import ConfigError


def test_as_outputs_is_float64_and_accepts_one_class() -> None:
    x = as_outputs([[1, 0], [0, 1]])
    assert x.dtype == np.float64
    assert as_outputs([[0.5], [0.7]]).shape == (2, 1)


@pytest.mark.parametrize(("bad", "message"), [
    ([[]], r"non-empty \(participants, classes\) array, got shape \(1, 0\)"),
    ([[np.nan, 1.0]], r"^outputs contain NaN or Inf; such answers belong in the DLQ$"),
], ids=["empty", "nan"])
def test_as_outputs_errors_say_what_is_wrong(bad: list[list[float]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        as_outputs(bad)


def test_a_zero_vector_goes_uniform_without_a_division_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = to_simplex(np.array([[0.0, 0.0], [1.0, 3.0]]))
    np.testing.assert_allclose(out, [[0.5, 0.5], [0.25, 0.75]])


def test_entropy_of_one_row() -> None:
    assert entropy(np.array([0.5, 0.5])) == pytest.approx(np.log(2))


def _js_reference(x: np.ndarray, beta: float) -> np.ndarray:
    """JS(p_k || m) = H((p_k + m)/2) - (H(p_k) + H(m))/2, written out row by row."""
    p = x / x.sum(axis=1, keepdims=True)
    m = p.mean(axis=0)

    def h(v: np.ndarray) -> float:
        return float(-sum(t * np.log(t) for t in v if t > 0))

    w = np.array([np.exp(-beta * (h((row + m) / 2) - (h(row) + h(m)) / 2)) for row in p])
    return (w[:, None] * x).sum(axis=0) / w.sum()


def test_js_consensus_matches_the_written_out_formula_and_beta_defaults_to_five() -> None:
    x = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.2, 0.3, 0.5]])
    np.testing.assert_allclose(js_consensus(x), _js_reference(x, 5.0), rtol=1e-12)
    np.testing.assert_allclose(js_consensus(x, beta=2.0), _js_reference(x, 2.0), rtol=1e-12)
    with pytest.raises(ValueError, match=r"^beta must be >= 0, got -1.0$"):
        js_consensus(x, beta=-1.0)


def test_trimmed_mean_with_no_trim_is_the_mean() -> None:
    x = np.array([[0.1, 0.9], [0.3, 0.7], [0.8, 0.2]])
    np.testing.assert_allclose(trimmed_mean(x, trim=0.0), x.mean(axis=0))


def test_spectral_weights_shapes() -> None:
    shape = r"^confidences must be \(queries, participants\), got \(3,\)$"
    with pytest.raises(ValueError, match=shape):
        spectral_weights([0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"^confidences contain NaN or Inf$"):
        spectral_weights([[0.1, np.inf], [0.2, 0.3]])
    np.testing.assert_allclose(spectral_weights([[0.1], [0.9], [0.4]]), [1.0])


def test_spectral_weights_from_two_queries() -> None:
    """Two queries already give a covariance; one participant that does not move gets 0."""
    w = spectral_weights([[0.2, 0.5, 0.1], [0.9, 0.5, 0.8]])
    np.testing.assert_allclose(w, [0.5, 0.0, 0.5], atol=1e-12)


def test_unknown_strategy_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError,
                       match=r"use one of entropy_weighted, (.*, )?hard_vote, js_consensus"):
        aggregate([[1.0]], strategy="nope")
