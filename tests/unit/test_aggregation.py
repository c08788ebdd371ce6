"""Aggregation strategies: pure, deterministic, robust where they claim to be."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fi_stream.aggregation import STRATEGIES, aggregate, spectral_weights, to_simplex
from fi_stream.errors import ConfigError

outputs = arrays(np.float64, st.tuples(st.integers(1, 7), st.integers(2, 10)),
                 elements=st.floats(-2, 2, allow_nan=False))


@given(outputs)
def test_soft_vote_is_the_mean(x: np.ndarray) -> None:
    assert np.array_equal(aggregate(x, "soft_vote").vector, x.mean(axis=0))


@given(outputs, st.sampled_from(sorted(s for s in STRATEGIES if s != "weighted")))
def test_every_strategy_is_deterministic_and_well_formed(x: np.ndarray, name: str) -> None:
    a, b = aggregate(x, name), aggregate(x.copy(), name)
    assert np.array_equal(a.vector, b.vector)
    assert a.vector.shape == (x.shape[1],) and a.vector.dtype == np.float64
    assert 0 <= a.prediction < x.shape[1] and 0 <= a.confidence <= 1


@given(outputs)
def test_to_simplex_gives_distributions(x: np.ndarray) -> None:
    p = to_simplex(x)
    assert (p >= 0).all() and np.allclose(p.sum(axis=1), 1)


def test_median_and_trimmed_mean_resist_one_garbage_row() -> None:
    honest = np.tile(np.eye(1, 10, k=3), (4, 1)) * 0.9
    garbage = np.full((1, 10), -50.0)
    garbage[0, 7] = 100.0
    x = np.vstack([honest, garbage])
    assert aggregate(x, "soft_vote").prediction == 7
    assert aggregate(x, "median").prediction == 3
    assert aggregate(x, "trimmed_mean").prediction == 3


def test_hard_vote_counts_argmaxes() -> None:
    x = np.array([[0.9, 0.1], [0.8, 0.2], [0.0, 1.0]])
    assert np.allclose(aggregate(x, "hard_vote").vector, [2 / 3, 1 / 3])


def test_entropy_and_js_weighting_favour_confident_consensus() -> None:
    x = np.array([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.2, 0.4, 0.4]])
    assert aggregate(x, "entropy_weighted").vector[0] > aggregate(x, "soft_vote").vector[0]
    assert aggregate(x, "js_consensus").vector[0] > aggregate(x, "soft_vote").vector[0]


def test_weighted_uses_the_weights() -> None:
    x = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert aggregate(x, "weighted", weights=[3, 1]).prediction == 0
    assert aggregate(x, "weighted", weights=[0, 0]).vector.tolist() == [0.5, 0.5]


def test_spectral_weights_sum_to_one() -> None:
    c = np.random.default_rng(0).random((30, 4))
    w = spectral_weights(c)
    assert w.shape == (4,) and np.isclose(w.sum(), 1) and (w >= 0).all()
    assert np.allclose(spectral_weights(c[:1]), 0.25)


def test_unknown_strategy_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="soft_vote"):
        aggregate(np.ones((2, 2)), "nope")
