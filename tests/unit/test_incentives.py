"""Label-free scores, reward splits, Shapley axioms and the comparison measures."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fi_stream.errors import ConfigError
from fi_stream.incentives import (
    LABEL_FREE_METHODS,
    ensemble_accuracy_value,
    entropy_score,
    equal_split,
    final_agreement,
    loo_agreement,
    loo_confidence_effect,
    loo_consensus,
    loo_cosine,
    shapley_exact,
    shapley_monte_carlo,
    skill_fairness,
    spearman,
    split_rewards,
    window_scores,
)

Game = Callable[[frozenset[str]], float]
outputs = arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(2, 6)),
                 elements=st.floats(-1, 2, allow_nan=False))


def table_game(table: dict[frozenset[str], float]) -> Game:
    return lambda s: table[s]


# -- label-free per query ----------------------------------------------------------------------

def test_loo_scores_on_a_hand_example() -> None:
    x = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    others = [[0.0, 1.0]] + [[1 / 3, 2 / 3]] * 3
    assert np.allclose(loo_consensus(x), others)
    assert loo_agreement(x).tolist() == [0.0, 1.0, 1.0, 1.0]
    assert loo_cosine(x)[0] == 0.0
    assert loo_cosine(x)[1] == pytest.approx(2 / math.sqrt(5))


def test_loo_confidence_effect_on_a_hand_example() -> None:
    # full soft vote [2/3, 1/3] predicts 0; without p0 or p2 it is [1/2, 1/2], without p1 [1, 0]
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert np.allclose(loo_confidence_effect(x), [1 / 6, -1 / 3, 1 / 6])


def test_final_agreement_splits_one_unit_among_the_majority() -> None:
    x = np.array([[0.9, 0.1], [0.1, 0.9], [0.8, 0.2]])
    assert final_agreement(x).tolist() == [0.5, 0.0, 0.5]


@given(outputs, st.sampled_from(sorted(LABEL_FREE_METHODS)))
def test_every_method_scores_each_participant(x: np.ndarray, method: str) -> None:
    scores = LABEL_FREE_METHODS[method](x)
    assert scores.shape == (len(x),) and scores.dtype == np.float64
    assert np.isfinite(scores).all()


@given(outputs)
def test_shares_sum_to_one_per_query(x: np.ndarray) -> None:
    assert entropy_score(x).sum() == pytest.approx(1)
    assert equal_split(x).sum() == pytest.approx(1)
    assert final_agreement(x).sum() in (0.0, pytest.approx(1))


def test_a_single_participant_has_no_leave_one_out_consensus() -> None:
    x = np.array([[0.2, 0.8]])
    assert loo_agreement(x).tolist() == [0.0]
    assert loo_cosine(x).tolist() == [0.0]
    with pytest.raises(ValueError):
        loo_consensus(x)


# -- windows and rewards -----------------------------------------------------------------------

def test_window_scores_sum_per_query_scores() -> None:
    q1 = (["a", "b", "c"], np.array([[1.0, 0], [1.0, 0], [0, 1.0]]))
    q2 = (["a", "b"], np.array([[0, 1.0], [0, 1.0]]))
    assert window_scores([q1, q2], "loo_agreement") == {"a": 2.0, "b": 2.0, "c": 0.0}
    assert window_scores([q1], "equal_split") == pytest.approx({"a": 1 / 3, "b": 1 / 3,
                                                                "c": 1 / 3})


@given(outputs, st.sampled_from(sorted(LABEL_FREE_METHODS)))
def test_window_scores_do_not_depend_on_row_order(x: np.ndarray, method: str) -> None:
    ids = [f"p{i}" for i in range(len(x))]
    flipped = window_scores([(ids[::-1], x[::-1])], method)
    assert flipped == window_scores([(ids, x)], method)


def test_window_scores_reject_bad_input() -> None:
    with pytest.raises(ConfigError, match="loo_agreement"):
        window_scores([], "nope")
    with pytest.raises(ValueError, match="ids"):
        window_scores([(["a"], np.ones((2, 2)))], "equal_split")
    with pytest.raises(ValueError, match="duplicate"):
        window_scores([(["a", "a"], np.ones((2, 2)))], "equal_split")


@given(st.dictionaries(st.text("abcdef", min_size=1, max_size=3),
                       st.floats(-1e300, 1e300, allow_nan=False), min_size=1),
       st.floats(0, 1e6))
def test_split_rewards_pays_the_budget_to_positive_scores(scores: dict[str, float],
                                                           budget: float) -> None:
    rewards = split_rewards(scores, budget)
    assert list(rewards) == sorted(scores)
    assert all(r >= 0 for r in rewards.values())
    assert all(rewards[k] == 0 for k, s in scores.items() if s <= 0)
    if any(s > 0 for s in scores.values()):
        assert math.isclose(sum(rewards.values()), budget, rel_tol=1e-9, abs_tol=1e-9)
    else:
        assert all(r == 0 for r in rewards.values())


def test_split_rewards_is_proportional() -> None:
    assert split_rewards({"b": 3.0, "a": 1.0, "c": -2.0}, 8.0) == {"a": 2.0, "b": 6.0, "c": 0.0}
    with pytest.raises(ValueError):
        split_rewards({"a": 1.0}, -1.0)
    with pytest.raises(ValueError):
        split_rewards({"a": math.nan}, 1.0)


# -- Shapley -----------------------------------------------------------------------------------

def test_shapley_hand_computed_three_players() -> None:
    # a and b are each worth 1, together 3 (synergy); c adds nothing.
    base = {"": 0, "a": 1, "b": 1, "c": 0, "ab": 3, "ac": 1, "bc": 1, "abc": 3}
    table = {frozenset(k): float(v) for k, v in base.items()}
    phi = shapley_exact(["c", "b", "a"], table_game(table))
    assert list(phi) == ["a", "b", "c"]
    assert phi == pytest.approx({"a": 1.5, "b": 1.5, "c": 0.0})


def test_shapley_of_a_weighted_majority_game() -> None:
    # Wins with weight ≥ 3 of weights a=2, b=1, c=1: a pivots in 4 of 6 orders.
    weights = {"a": 2, "b": 1, "c": 1}

    def game(s: frozenset[str]) -> float:
        return float(sum(weights[i] for i in s) >= 3)

    assert shapley_exact(list(weights), game) == pytest.approx({"a": 2 / 3, "b": 1 / 6,
                                                                "c": 1 / 6})


@given(st.lists(st.floats(-1, 1), min_size=16, max_size=16))
def test_shapley_efficiency_symmetry_and_null_player(values: list[float]) -> None:
    ids = ["a", "b", "c", "d"]
    subsets = [frozenset(s) for n in range(5) for s in itertools.combinations(ids, n)]
    table = dict(zip(subsets, values, strict=True))
    swap = {"a": "b", "b": "a"}
    for s in subsets:  # make a and b interchangeable
        swapped = frozenset(swap.get(i, i) for i in s)
        table[swapped] = table[s] = max(table[s], table[swapped])
    for s in subsets:  # make d a null player: it never changes the value
        if "d" in s:
            table[s] = table[s - {"d"}]
    phi = shapley_exact(ids, table_game(table))
    assert sum(phi.values()) == pytest.approx(table[frozenset(ids)] - table[frozenset()],
                                              abs=1e-12)
    assert phi["a"] == pytest.approx(phi["b"], abs=1e-12)
    assert phi["d"] == pytest.approx(0.0, abs=1e-12)


def test_shapley_exact_calls_the_game_once_per_coalition() -> None:
    calls: list[frozenset[str]] = []

    def game(s: frozenset[str]) -> float:
        calls.append(s)
        return float(len(s))

    ids = [f"p{i}" for i in range(6)]
    assert shapley_exact(ids, game) == pytest.approx(dict.fromkeys(ids, 1.0))
    assert len(calls) == len(set(calls)) == 2**6


def test_shapley_exact_limits() -> None:
    assert shapley_exact([], table_game({})) == {}
    with pytest.raises(ConfigError, match="monte_carlo"):
        shapley_exact([f"p{i}" for i in range(13)], lambda s: 0.0)
    with pytest.raises(ValueError, match="duplicate"):
        shapley_exact(["a", "a"], lambda s: 0.0)


def _window(seed: int, ids: list[str], queries: int = 20) -> tuple[
        list[tuple[list[str], np.ndarray]], list[int]]:
    rng = np.random.default_rng(seed)
    return ([(ids, rng.random((len(ids), 3))) for _ in range(queries)],
            [int(rng.integers(3)) for _ in range(queries)])


@settings(deadline=None, max_examples=20)
@given(st.integers(0, 10**6))
def test_shapley_of_ensemble_accuracy_is_efficient(seed: int) -> None:
    ids = ["a", "b", "c", "d", "e"]
    window, labels = _window(seed, ids)
    value = ensemble_accuracy_value(window, labels)
    phi = shapley_exact(ids, value)
    assert value(frozenset()) == 0.0
    assert sum(phi.values()) == pytest.approx(value(frozenset(ids)), abs=1e-12)


def test_ensemble_accuracy_value_by_hand() -> None:
    window = [
        (["a", "b"], np.array([[0.9, 0.1], [0.2, 0.8]])),  # label 0: a right, b wrong
        (["b"], np.array([[0.3, 0.7]])),  # label 1: only b answered
    ]
    value = ensemble_accuracy_value(window, [0, 1])
    assert value(frozenset()) == 0.0
    assert value(frozenset({"a"})) == 0.5  # a is absent from query 2: counted wrong
    assert value(frozenset({"b"})) == 0.5
    assert value(frozenset({"a", "b"})) == 1.0  # soft vote [0.55, 0.45] is right
    with pytest.raises(ValueError):
        ensemble_accuracy_value(window, [0])


def test_monte_carlo_converges_to_exact_with_a_stated_error() -> None:
    ids = ["a", "b", "c", "d"]
    window, labels = _window(0, ids)
    value = ensemble_accuracy_value(window, labels)
    exact = shapley_exact(ids, value)
    est, err = shapley_monte_carlo(ids, value, 400, np.random.default_rng(0))
    for pid in exact:
        assert 0 < err[pid] < 0.05
        assert abs(est[pid] - exact[pid]) <= 5 * err[pid]
    again, _ = shapley_monte_carlo(ids, value, 400, np.random.default_rng(0))
    assert again == est


def test_monte_carlo_is_exact_per_permutation_and_efficient() -> None:
    ids = ["a", "b", "c"]
    est, err = shapley_monte_carlo(ids, lambda s: float(len(s)) ** 2, 1,
                                   np.random.default_rng(1))
    assert sum(est.values()) == pytest.approx(9.0)
    assert all(math.isinf(e) for e in err.values())
    with pytest.raises(ValueError):
        shapley_monte_carlo(ids, lambda s: 0.0, 0, np.random.default_rng(1))


# -- comparison measures -----------------------------------------------------------------------

def test_skill_fairness() -> None:
    assert skill_fairness({"a": 1, "b": 1}, {"a": 5, "b": 5}) == 1.0
    assert skill_fairness({"a": 1, "b": 0}, {"a": 0, "b": 1}) == 0.0
    assert skill_fairness({"a": 3, "b": 1}, {"a": 1, "b": 1, "c": 2}) == pytest.approx(0.5)
    assert math.isnan(skill_fairness({"a": 0}, {"a": 1}))


def test_spearman() -> None:
    assert spearman({"a": 1, "b": 2, "c": 3}, {"a": 10, "b": 20, "c": 30}) == pytest.approx(1)
    assert spearman({"a": 1, "b": 2, "c": 3}, {"a": 3, "b": 2, "c": 1}) == pytest.approx(-1)
    # ties share their average rank: ranks (0, 1.5, 1.5, 3) against (0, 1, 2, 3)
    ties = spearman({"a": 1, "b": 2, "c": 2, "d": 3}, {"a": 1, "b": 2, "c": 3, "d": 4})
    assert ties == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    assert spearman({"a": 1, "b": 2, "x": 9}, {"a": 1, "b": 2, "y": 0}) == pytest.approx(1)
    assert math.isnan(spearman({"a": 1}, {"a": 1}))
    assert math.isnan(spearman({"a": 1, "b": 1}, {"a": 1, "b": 2}))


@settings(deadline=None)  # the first call imports scipy
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=3, max_size=12))
def test_spearman_matches_scipy(pairs: list[tuple[int, int]]) -> None:
    stats = pytest.importorskip("scipy.stats")
    a = {f"p{i}": float(x) for i, (x, _) in enumerate(pairs)}
    b = {f"p{i}": float(y) for i, (_, y) in enumerate(pairs)}
    ours = spearman(a, b)
    if math.isnan(ours):
        assert len(set(a.values())) == 1 or len(set(b.values())) == 1
    else:
        ids = sorted(a)
        theirs = stats.spearmanr([a[i] for i in ids], [b[i] for i in ids]).statistic
        assert ours == pytest.approx(theirs, abs=1e-12)
