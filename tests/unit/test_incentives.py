"""Label-free scores, reward splits, Shapley axioms and the comparison measures."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fi_stream.incentives import (
    ensemble_accuracy_value,
    loo_agreement,
    loo_consensus,
    loo_cosine,
    shapley_exact,
    shapley_monte_carlo,
    skill_fairness,
    spearman,
    split_rewards,
    window_scores,
)


def test_loo_consensus_excludes_the_participant() -> None:
    x = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    assert np.allclose(loo_consensus(x), [[0, 1], [1 / 3, 2 / 3], [1 / 3, 2 / 3], [1 / 3, 2 / 3]])
    assert loo_agreement(x).tolist() == [0.0, 1.0, 1.0, 1.0]
    assert loo_cosine(x)[0] == 0.0


def test_window_scores_sum_per_query_scores() -> None:
    q1 = (["a", "b", "c"], np.array([[1.0, 0], [1.0, 0], [0, 1.0]]))
    q2 = (["a", "b"], np.array([[0, 1.0], [0, 1.0]]))
    assert window_scores([q1, q2], "loo_agreement") == {"a": 2.0, "b": 2.0, "c": 0.0}
    assert window_scores([q1], "equal_split") == pytest.approx({"a": 1 / 3, "b": 1 / 3,
                                                                "c": 1 / 3})


@given(st.dictionaries(st.text("abcdef", min_size=1, max_size=3),
                       st.floats(-10, 10, allow_nan=False), min_size=1),
       st.floats(0, 1000))
def test_split_rewards_pays_the_budget_to_positive_scores(scores: dict[str, float],
                                                           budget: float) -> None:
    rewards = split_rewards(scores, budget)
    assert set(rewards) == set(scores)
    assert all(rewards[k] == 0 for k, s in scores.items() if s <= 0)
    if any(s > 0 for s in scores.values()):
        assert math.isclose(sum(rewards.values()), budget, rel_tol=1e-9, abs_tol=1e-9)


def _table_value(table: dict[frozenset[str], float]):  # type: ignore[no-untyped-def]
    return lambda s: table[s]


def test_shapley_hand_computed_three_players() -> None:
    # v: a and b are each worth 1, together 3 (synergy), c adds nothing.
    base = {"": 0, "a": 1, "b": 1, "c": 0, "ab": 3, "ac": 1, "bc": 1, "abc": 3}
    table = {frozenset(k): float(v) for k, v in base.items()}
    phi = shapley_exact(["a", "b", "c"], _table_value(table))
    assert phi == pytest.approx({"a": 1.5, "b": 1.5, "c": 0.0})


@given(st.lists(st.floats(0, 1), min_size=8, max_size=8))
def test_shapley_efficiency_and_symmetry(values: list[float]) -> None:
    ids = ["a", "b", "c"]
    subsets = [frozenset(s) for n in range(4) for s in itertools.combinations(ids, n)]
    table = dict(zip(subsets, values, strict=True))
    # make a and b symmetric: swapping them leaves v unchanged
    for s in subsets:
        swapped = frozenset({"a": "b", "b": "a"}.get(i, i) for i in s)
        table[swapped] = table[s] = max(table[s], table[swapped])
    phi = shapley_exact(ids, _table_value(table))
    assert sum(phi.values()) == pytest.approx(table[frozenset(ids)] - table[frozenset()])
    assert phi["a"] == pytest.approx(phi["b"])


def test_monte_carlo_converges_to_exact_with_a_stated_error() -> None:
    rng = np.random.default_rng(0)
    outputs = [(["a", "b", "c", "d"], rng.random((4, 3))) for _ in range(20)]
    labels = [int(rng.integers(3)) for _ in range(20)]
    value = ensemble_accuracy_value(outputs, labels)
    exact = shapley_exact(["a", "b", "c", "d"], value)
    est, err = shapley_monte_carlo(["a", "b", "c", "d"], value, 400, rng)
    for pid in exact:
        assert abs(est[pid] - exact[pid]) <= 5 * err[pid] + 1e-9


def test_fairness_and_rank_correlation() -> None:
    assert skill_fairness({"a": 1, "b": 1}, {"a": 5, "b": 5}) == 1.0
    assert skill_fairness({"a": 1, "b": 0}, {"a": 0, "b": 1}) == 0.0
    assert spearman({"a": 1, "b": 2, "c": 3}, {"a": 10, "b": 20, "c": 30}) == pytest.approx(1)
    assert spearman({"a": 1, "b": 2, "c": 3}, {"a": 3, "b": 2, "c": 1}) == pytest.approx(-1)
    assert math.isnan(spearman({"a": 1}, {"a": 1}))
