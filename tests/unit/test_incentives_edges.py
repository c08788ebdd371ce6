"""Incentives' edges, pinned one by one (issue 18: each test kills a mutmut survivor).

Two-participant queries (the smallest leave-one-out), zero vectors, the batched votes
against the per-query ones, error messages, and the degenerate cases of the statistics.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fi_stream.errors import ConfigError
from fi_stream.incentives import (
    ensemble_accuracy_value,
    entropy_score,
    final_agreement,
    loo_agreement,
    loo_agreement_batch,
    loo_confidence_effect,
    loo_consensus,
    loo_cosine,
    loo_votes_batch,
    shapley_monte_carlo,
    skill_fairness,
    spearman,
    split_rewards,
    window_scores,
)

TWO = np.array([[0.2, 0.8], [0.7, 0.3]])


def test_two_participants_are_enough_for_every_leave_one_out_score() -> None:
    np.testing.assert_allclose(loo_cosine(TWO), [
        TWO[0] @ TWO[1] / (np.linalg.norm(TWO[0]) * np.linalg.norm(TWO[1]))] * 2)
    full = TWO.mean(axis=0)  # predicts class 1 (0.55)
    np.testing.assert_allclose(loo_confidence_effect(TWO), [0.55 - 0.3, 0.55 - 0.8])
    assert full.argmax() == 1
    np.testing.assert_array_equal(loo_agreement_batch(TWO[None]), [[0.0, 0.0]])


def test_batched_votes_equal_the_per_query_ones() -> None:
    rng = np.random.default_rng(5)
    x = rng.random((6, 3, 4))
    x[0] = [[0.1, 0.9, 0.0, 0.0], [0.8, 0.2, 0.0, 0.0], [0.7, 0.3, 0.0, 0.0]]
    own, peer = loo_votes_batch(x)
    agree = loo_agreement_batch(x)
    for j in range(len(x)):
        assert own[j].tolist() == x[j].argmax(axis=1).tolist()
        assert peer[j].tolist() == loo_consensus(x[j]).argmax(axis=1).tolist()
        assert agree[j].tolist() == loo_agreement(x[j]).tolist()
    assert agree[0].tolist() == [0.0, 0.0, 0.0]  # every one of them disagrees with the others
    _, peer2 = loo_votes_batch(TWO[None])
    assert peer2.tolist() == [[0, 1]]  # each one's peer is the other's vote


def test_a_zero_vector_has_cosine_zero() -> None:
    np.testing.assert_allclose(loo_cosine([[0.0, 0.0], [0.5, 0.5], [0.4, 0.6]])[0], 0.0)


def test_final_agreement_shares_one_unit_among_who_said_what_the_ensemble_said() -> None:
    # The ensemble mean is [0.5, 0.5, ...]-like per column: class 2 wins, one voter for it.
    x = [[0.0, 0.6, 0.4], [0.5, 0.0, 0.5], [0.0, 0.0, 1.0]]
    np.testing.assert_allclose(final_agreement(x), [0.0, 0.0, 1.0])


def test_a_confident_answer_weighs_more_in_the_entropy_score() -> None:
    s = entropy_score([[0.98, 0.02], [0.5, 0.5]])
    assert s[0] > s[1]


@pytest.mark.parametrize(("call", "message"), [
    (lambda: loo_consensus([[0.5, 0.5]]),
     r"^a leave-one-out consensus needs at least 2 participants$"),
    (lambda: split_rewards({"a": 1.0}, -1.0), r"^budget must be a finite number >= 0, got -1.0$"),
    (lambda: split_rewards({"a": math.nan}, 1.0), r"^scores contain NaN or Inf$"),
    (lambda: ensemble_accuracy_value([(["a"], [[1.0]])], []), r"^1 queries but 0 labels$"),
    (lambda: shapley_monte_carlo(["a"], lambda c: 0.0, 0, np.random.default_rng(0)),
     r"^permutations must be >= 1, got 0$"),
], ids=["loo", "budget", "scores", "labels", "permutations"])
def test_errors_say_what_is_wrong(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        call()


def test_an_unknown_method_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"use one of correlated_agreement, entropy"):
        window_scores([(["a", "b"], TWO)], "nope")


def test_a_window_of_no_queries_is_worth_nothing() -> None:
    value = ensemble_accuracy_value([], [])
    assert value(frozenset()) == 0.0 and value(frozenset({"a"})) == 0.0


def test_monte_carlo_errors_are_the_sample_std_over_root_permutations() -> None:
    """Two participants, value = 1 only together: each gain is 0 or 1 by the order."""
    def value(c: frozenset[str]) -> float:
        return 1.0 if len(c) == 2 else 0.0
    phi, errors = shapley_monte_carlo(["a", "b"], value, 2, np.random.default_rng(2))
    # This seed draws both orders: each one's gains are {0, 1}, std(ddof=1)/√2 = 0.5.
    assert phi == {"a": 0.5, "b": 0.5}
    assert errors == pytest.approx({"a": 0.5, "b": 0.5})


def test_no_positive_mass_and_no_variance_are_nan() -> None:
    assert math.isnan(skill_fairness({"a": 0.0, "b": 0.0}, {"a": 1.0}))
    assert math.isnan(spearman({"a": 1.0, "b": 1.0}, {"a": 1.0, "b": 2.0}))
    assert spearman({"a": 1.0, "b": 2.0, "c": 3.0}, {"a": 3.0, "b": 2.0, "c": 1.0}) == -1.0
    assert split_rewards({"a": 0.0, "b": -1.0}, 10.0) == {"a": 0.0, "b": 0.0}
