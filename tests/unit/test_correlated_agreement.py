"""The default incentive method: agreement with the peers' consensus minus chance agreement."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fi_stream.errors import ConfigError
from fi_stream.incentives import (
    DEFAULT_METHOD,
    INCENTIVE_METHODS,
    correlated_agreement_add,
    correlated_agreement_score,
    loo_agreement,
    tally_votes,
    window_scores,
)
from fi_stream.results import IncentiveWindow, soft_vote_in_batches
from fi_stream.settings import load_settings
from schemas import Result, WindowRef


def test_hand_example() -> None:
    # Three queries; "a" agrees twice with its peer, answers classes 0,0,1; the peer 0,1,1.
    totals: dict[str, list[int]] = {}
    for own, peer in ((0, 0), (0, 1), (1, 1)):
        tally_votes(totals, ["a"], ([own], [peer]), 2)
    assert totals == {"a": [2, 2, 1, 1, 2]}
    # A = 2, f = (2, 1), g = (1, 2): chance f·g/n = 4/3.
    assert correlated_agreement_score(totals["a"]) == pytest.approx(2 - 4 / 3)
    assert correlated_agreement_score([0] * 5) == 0.0


def test_tally_agrees_with_loo_agreement_and_widens_for_mixed_tasks() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        x = rng.random((4, 6))
        totals: dict[str, list[int]] = {}
        correlated_agreement_add(totals, list("abcd"), x)
        assert [totals[p][0] for p in "abcd"] == loo_agreement(x).tolist()
    lone: dict[str, list[int]] = {}
    correlated_agreement_add(lone, ["a"], rng.random((1, 6)))
    assert lone == {}
    mixed: dict[str, list[int]] = {}
    tally_votes(mixed, ["a"], ([1], [0]), 2)
    tally_votes(mixed, ["a"], ([2], [2]), 3)
    assert mixed == {"a": [1, 0, 1, 1, 1, 0, 1]}


def _federation(rng: np.random.Generator, n: int, honest: int, classes: int = 10
                ) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, classes, n)
    x = rng.normal(0, 0.3, (n, honest, classes))
    x[np.arange(n), :, labels] += 1.0
    return labels, x


@pytest.mark.parametrize("liar", ["random", "constant", "uniform", "skewed"])
def test_uninformative_answers_score_about_zero_and_honest_ones_well_above(liar: str) -> None:
    rng = np.random.default_rng(11)
    n, c = 400, 10
    labels, x = _federation(rng, n, 5, c)
    fake = rng.normal(0, 0.3, (n, 1, c))
    if liar == "random":
        fake[np.arange(n), 0, rng.integers(0, c, n)] += 1.0
    elif liar == "constant":
        fake[:, 0, 0] += 1.0
    elif liar == "uniform":
        fake += 1.0 / c
    else:  # a random class drawn to mimic the label distribution's skew
        fake[np.arange(n), 0, rng.choice(c, n, p=np.bincount(labels, minlength=c) / n)] += 1
    x = np.concatenate([x, fake], axis=1)
    ids = [f"h{i}" for i in range(5)] + ["z"]
    scores = window_scores([(ids, x[q]) for q in range(n)], "correlated_agreement")
    # An uninformative answer: E[score] = 0, std ≈ √(n·p(1−p)) ≈ 6 at n = 400, p = 0.1.
    assert abs(scores["z"]) < 25
    assert min(scores[f"h{i}"] for i in range(5)) > 0.5 * n
    plain = window_scores([(ids, x[q]) for q in range(n)], "loo_agreement")
    assert plain["z"] > scores["z"]  # loo_agreement pays chance agreement; this does not


@given(arrays(np.float64, st.tuples(st.integers(2, 12), st.integers(2, 5), st.integers(2, 4)),
              elements=st.floats(-1, 2, allow_nan=False)))
def test_window_state_round_trip_and_batched_path_are_bit_exact(x: np.ndarray) -> None:
    """The aggregator's batched tallies, a restart through the commit metadata, and the
    auditor's per-query replay all give the same floats."""
    q, k, _ = x.shape
    ids = [f"p{i}" for i in range(k)]
    direct = window_scores([(ids, x[i]) for i in range(q)], "correlated_agreement")
    window = IncentiveWindow(0, 0, 0, "correlated_agreement")
    for i in range(q):
        if i == q // 2:  # the aggregator restarts mid-window
            window = IncentiveWindow.from_state(orjson.loads(orjson.dumps(window.to_state())))
        result = Result(query_id=f"q{i}", task="t", status="complete", strategy="soft_vote",
                        quorum=1, created_at_ms=0, deadline_ms=1, completed_at_ms=i,
                        window=WindowRef(partition=0, seq=0))
        window.add(result, ids, x[i])
    assert window.current_scores() == direct
    closed = {inc.participant_id: inc.score for inc in window.close(budget=100.0)}
    assert closed == direct


def test_batched_votes_feed_the_same_tallies() -> None:
    from .test_results import _joined

    rng = np.random.default_rng(5)
    oqs = []
    for _ in range(30):
        oq = _joined()
        for pid, ans in list(oq.answers.items()):
            oq.answers[pid] = type(ans)(pid, rng.random(10).astype(np.float32), ans.partition,
                                        ans.offset, ans.index, ans.produced_at_ms)
        oqs.append(oq)
    for i, oq in enumerate(oqs):  # the joins share a query id: give each its own
        oq.query = oq.query.model_copy(update={"query_id": f"q{i}"})
    batched = soft_vote_in_batches(oqs)
    assert len(batched) == 30
    fast = IncentiveWindow(0, 0, 0, "correlated_agreement")
    slow = IncentiveWindow(0, 0, 0, "correlated_agreement")
    result = Result(query_id="q", task="t", status="complete", strategy="soft_vote", quorum=1,
                    created_at_ms=0, deadline_ms=1, completed_at_ms=0,
                    window=WindowRef(partition=0, seq=0))
    for oq in oqs:
        b = batched[oq.query.query_id]
        ids = sorted(oq.answers)
        fast.add(result, ids, b.outputs, b)
        slow.add(result, ids, b.outputs)
    assert fast.current_scores() == slow.current_scores()


def test_default_is_registered_and_settings_refuse_unknown_methods() -> None:
    assert DEFAULT_METHOD in INCENTIVE_METHODS
    assert load_settings().aggregator.incentive_method == DEFAULT_METHOD
    with pytest.raises(ConfigError, match="correlated_agreement"):
        load_settings(aggregator={"incentive_method": "nope"})
    with pytest.raises(ConfigError, match="unknown incentive method"):
        window_scores([], "nope")
