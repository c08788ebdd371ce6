"""Aggregation strategies: pure, deterministic, robust where they claim to be."""

from __future__ import annotations

from random import Random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fi_stream.aggregation import (
    STRATEGIES,
    Aggregate,
    aggregate,
    spectral_weights,
    to_simplex,
)
from fi_stream.errors import ConfigError

outputs = arrays(np.float64, st.tuples(st.integers(1, 7), st.integers(2, 10)),
                 elements=st.floats(-2, 2, allow_nan=False))
names = st.sampled_from(sorted(STRATEGIES))


@given(outputs)
def test_soft_vote_is_the_mean(x: np.ndarray) -> None:
    assert np.array_equal(aggregate(x, "soft_vote").vector, x.mean(axis=0))


@given(outputs, names)
def test_every_strategy_is_deterministic_and_well_formed(x: np.ndarray, name: str) -> None:
    a, b = aggregate(x, name), aggregate(x.copy(), name)
    assert np.array_equal(a.vector, b.vector)
    assert a.vector.shape == (x.shape[1],) and a.vector.dtype == np.float64
    assert a.prediction == int(np.argmax(a.vector))
    assert 0 <= a.confidence <= 1
    assert a.confidence == pytest.approx(to_simplex(a.vector)[a.prediction])


@given(outputs, names, st.randoms(use_true_random=False))
def test_sorting_by_participant_id_makes_arrival_order_irrelevant(
        x: np.ndarray, name: str, rnd: Random) -> None:
    ids = [f"p{i:02d}" for i in range(len(x))]
    arrival = list(range(len(x)))
    rnd.shuffle(arrival)
    shuffled_ids, shuffled = [ids[i] for i in arrival], x[arrival]
    order = np.argsort(shuffled_ids)
    # bit-identical after the caller's sort, and equal up to rounding in any order
    assert np.array_equal(aggregate(shuffled[order], name).vector, aggregate(x, name).vector)
    assert np.allclose(aggregate(shuffled, name).vector, aggregate(x, name).vector,
                       rtol=1e-12, atol=1e-12)


@given(outputs)
def test_to_simplex_gives_distributions(x: np.ndarray) -> None:
    p = to_simplex(x)
    assert p.shape == x.shape
    assert (p >= 0).all() and np.allclose(p.sum(axis=1), 1)
    assert np.allclose(to_simplex(p), p)  # a projection


def test_to_simplex_of_a_non_positive_row_is_uniform() -> None:
    assert to_simplex(np.array([-1.0, 0.0, -3.0, 0.0])).tolist() == [0.25] * 4
    assert np.allclose(to_simplex(np.array([2.0, -1.0, 2.0])), [0.5, 0.0, 0.5])


@given(st.integers(0, 9), st.integers(3, 6),
       arrays(np.float64, 10, elements=st.floats(-1e9, 1e9, allow_nan=False)))
def test_median_and_trimmed_mean_resist_one_garbage_row(
        cls: int, honest: int, garbage: np.ndarray) -> None:
    x = np.vstack([np.tile(np.eye(1, 10, k=cls) * 0.9, (honest, 1)), garbage[None, :]])
    assert aggregate(x, "median").prediction == cls
    assert aggregate(x, "trimmed_mean", trim=0.25).prediction == cls


def test_soft_vote_is_not_robust_but_median_is() -> None:
    honest = np.tile(np.eye(1, 10, k=3), (4, 1)) * 0.9
    garbage = np.full((1, 10), -50.0)
    garbage[0, 7] = 100.0
    x = np.vstack([honest, garbage])
    assert aggregate(x, "soft_vote").prediction == 7
    assert aggregate(x, "median").prediction == 3
    assert aggregate(x, "trimmed_mean").prediction == 3


def test_trimmed_mean_keeps_at_least_one_row() -> None:
    x = np.array([[1.0, 0.0], [0.0, 1.0], [0.4, 0.6]])
    assert np.allclose(aggregate(x, "trimmed_mean", trim=0.49).vector, [0.4, 0.6])
    assert np.allclose(aggregate(x[:1], "trimmed_mean", trim=0.49).vector, x[0])
    with pytest.raises(ValueError, match="trim"):
        aggregate(x, "trimmed_mean", trim=0.5)


def test_hard_vote_counts_argmaxes() -> None:
    x = np.array([[0.9, 0.1], [0.8, 0.2], [0.0, 1.0]])
    assert np.allclose(aggregate(x, "hard_vote").vector, [2 / 3, 1 / 3])


def test_entropy_and_js_weighting_favour_confident_consensus() -> None:
    x = np.array([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.2, 0.4, 0.4]])
    soft = aggregate(x, "soft_vote").vector[0]
    assert aggregate(x, "entropy_weighted").vector[0] > soft
    assert aggregate(x, "js_consensus").vector[0] > soft
    sharper = aggregate(x, "js_consensus", beta=50.0).vector[0]
    assert sharper > aggregate(x, "js_consensus").vector[0]
    assert np.allclose(aggregate(x, "js_consensus", beta=0.0).vector, x.mean(axis=0))


def test_weighted_uses_the_weights() -> None:
    x = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert aggregate(x, "weighted", weights=[3, 1]).vector.tolist() == [0.75, 0.25]
    assert aggregate(x, "weighted", weights=[0, 0]).vector.tolist() == [0.5, 0.5]
    assert aggregate(x, "weighted").vector.tolist() == [0.5, 0.5]
    for bad in ([1.0], [1.0, -1.0], [1.0, np.nan]):
        with pytest.raises(ValueError, match="weights"):
            aggregate(x, "weighted", weights=bad)


def test_spectral_weights_favour_participants_that_share_the_signal() -> None:
    rng = np.random.default_rng(0)
    signal = rng.random((200, 1))
    c = np.hstack([signal + 0.01 * rng.standard_normal((200, 3)),
                   0.5 + 0.01 * rng.standard_normal((200, 1))])
    w = spectral_weights(c)
    assert w.shape == (4,) and np.isclose(w.sum(), 1) and (w >= 0).all()
    assert w[:3].min() > 10 * w[3]


def test_spectral_weights_are_uniform_when_degenerate() -> None:
    c = np.random.default_rng(0).random((30, 4))
    assert np.allclose(spectral_weights(c[:1]), 0.25)  # one query: no covariance
    assert np.allclose(spectral_weights(np.full((30, 4), 0.7)), 0.25)  # no variance
    assert np.allclose(spectral_weights(np.eye(2)), 0.5)  # tied top eigenvalue
    with pytest.raises(ValueError):
        spectral_weights(np.full((3, 2), np.nan))


def test_aggregate_carries_prediction_and_confidence() -> None:
    agg = aggregate(np.array([[0.2, 0.6, -0.2], [0.2, 0.6, 0.2]]))
    assert isinstance(agg, Aggregate)
    assert agg.prediction == 1
    assert agg.confidence == pytest.approx(0.6 / 0.8)


def test_unknown_strategy_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="soft_vote"):
        aggregate(np.ones((2, 2)), "nope")


@pytest.mark.parametrize("bad", [np.zeros((0, 3)), np.zeros(3), np.array([[np.nan, 1.0]])])
def test_empty_or_malformed_outputs_are_refused(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        aggregate(bad)
