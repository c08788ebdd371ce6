"""Results' edges, pinned one by one (issue 18: each test kills a mutmut survivor).

Unanswered results, every list a Result carries (declined, excluded, copied, late), the
weights a weighted strategy records, the batched soft vote's groups, and the window's
counts and tallies.
"""

from __future__ import annotations

import math

import numpy as np

from fi_stream.aggregation import aggregate
from fi_stream.incentives import loo_votes_batch, window_scores
from fi_stream.join import Answer, OpenQuery
from fi_stream.results import (
    IncentiveWindow,
    build_result,
    soft_vote_in_batches,
    unanswered_result,
)
from fi_stream.validation import QueryHeader
from schemas import WindowRef

from .test_join import query

REF = WindowRef(partition=2, seq=5)


def _answer(pid: str, row: list[float], offset: int = 0, index: int = 0) -> Answer:
    return Answer(pid, np.array(row), 3, offset, index, 10)


def _oq(qid: str, rows: dict[str, list[float]], expected: frozenset[str] | None = None,
        ) -> OpenQuery:
    oq = OpenQuery(query=query(qid), partition=0, offset=1,
                   expected=expected if expected is not None else frozenset(rows))
    for i, (pid, row) in enumerate(sorted(rows.items())):
        oq.answers[pid] = _answer(pid, row, offset=40 + i, index=i)
        oq.waiting.discard(pid)
    return oq


def test_an_unanswered_result_carries_its_header() -> None:
    header = QueryHeader(query_id="q", task="digits", created_at_ms=3, deadline_ms=9, quorum=2)
    r = unanswered_result(header, status="rejected", reason="x" * 1200, strategy="median",
                          completed_at_ms=11, window=REF)
    assert (r.query_id, r.task, r.status, r.reason, r.strategy, r.quorum, r.created_at_ms,
            r.deadline_ms, r.completed_at_ms, r.window) == (
        "q", "digits", "rejected", "x" * 1000, "median", 2, 3, 9, 11, REF)


def test_every_list_of_a_result_and_its_status() -> None:
    oq = _oq("a", {"p1": [0.9, 0.1], "p2": [0.8, 0.2], "p5": [math.nan, 1.0]},
             expected=frozenset({"p1", "p2", "p3", "p4", "p5", "p6"}))
    oq.late.add("p3")
    oq.declines["p4"] = "budget_exhausted"
    copy = _answer("p6", [0.9, 0.1], offset=77, index=2)
    result, ids, _ = build_result(oq, strategy="soft_vote", completed_at_ms=9, window=REF,
                                  copied=[(copy, "p1")])
    assert ids == ["p1", "p2"] and result.missing == [] and result.late == ["p3"]
    assert result.status == "partial"  # one late, one non-finite: not complete
    assert [(d.participant_id, d.reason) for d in result.declined] == [
        ("p4", "budget_exhausted")]
    assert [(e.participant_id, e.partition, e.offset, e.index, e.reason)
            for e in result.excluded] == [("p5", 3, 42, 2, "non_finite")]
    assert [(c.participant_id, c.partition, c.offset, c.index, c.copy_of)
            for c in result.copied] == [("p6", 3, 77, 2, "p1")]
    assert result.confidence is not None and result.confidence > 0.5


def test_late_and_excluded_each_make_a_result_partial() -> None:
    rows = {"p1": [0.9, 0.1], "p2": [0.8, 0.2], "p3": [0.7, 0.3]}
    late = _oq("a", rows, expected=frozenset({"p1", "p2", "p3", "p4"}))
    late.late.add("p4")
    excluded = _oq("b", {**rows, "p4": [math.inf, 0.0]})
    for oq in (late, excluded):
        result, _, _ = build_result(oq, strategy="soft_vote", completed_at_ms=9, window=REF)
        assert result.status == "partial"


def test_weights_are_recorded_only_for_weighted_strategies_and_sanitised() -> None:
    rows = {"p1": [0.9, 0.1], "p2": [0.2, 0.8], "p3": [0.6, 0.4], "p4": [0.5, 0.5]}
    weights = {"p1": 0.5, "p2": math.inf, "p3": -2.0, "p4": math.nan}
    result, _, _ = build_result(_oq("a", rows), strategy="weighted", completed_at_ms=9,
                                window=REF, weights=weights)
    assert result.weights == [0.5, 0.0, 0.0, 0.0] and result.prediction == 0
    plain, _, _ = build_result(_oq("a", rows), strategy="soft_vote", completed_at_ms=9,
                               window=REF, weights=weights)
    assert plain.weights is None


def test_a_batched_soft_vote_is_used_only_for_soft_vote_with_every_answer_usable() -> None:
    rows = {"p1": [0.9, 0.1], "p2": [0.1, 0.9], "p3": [0.2, 0.8]}
    oq = _oq("a", rows)
    batched = soft_vote_in_batches([oq])["a"]
    result, _, outputs = build_result(oq, strategy="median", completed_at_ms=9, window=REF,
                                      batched=batched)
    assert outputs is not None
    assert result.aggregate is not None
    assert result.aggregate.to_numpy().tobytes() == aggregate(outputs, "median").vector.tobytes()
    oq.answers["p4"] = _answer("p4", [math.nan, 0.0])
    result, ids, _ = build_result(oq, strategy="soft_vote", completed_at_ms=9, window=REF,
                                  batched=batched)
    assert ids == ["p1", "p2", "p3"] and result.aggregate is not None


def test_batched_groups_skip_only_themselves() -> None:
    bad_width = _oq("w", {"p1": [0.5, 0.5], "p2": [0.1, 0.2, 0.7]})
    non_finite = _oq("n", {"p1": [0.5, math.inf], "p2": [0.1, 0.2]})
    one_class = _oq("c", {"p1": [1.0], "p2": [1.0], "p3": [1.0]})
    out = soft_vote_in_batches([bad_width, non_finite, one_class])
    assert set(out) == {"c"}
    assert out["c"].aggregate.prediction == 0 and out["c"].outputs.dtype == np.float64


def test_batched_votes_and_the_copy_screen() -> None:
    queries = [_oq(f"q{i}", {"p1": [0.9, 0.1 * i], "p2": [0.1, 0.9], "p3": [0.6, 0.4]})
               for i in range(3)]
    alone = _oq("solo", {"p9": [0.3, 0.7]})
    far = soft_vote_in_batches([*queries, alone], noise_std=lambda pid: 1e-9)
    x = np.stack([q_.answers[p].vector for q_ in queries for p in ("p1", "p2", "p3")])
    own, peer = loo_votes_batch(x.reshape(3, 3, 2))
    for j, q_ in enumerate(queries):
        b = far[q_.query.query_id]
        assert b.no_copies is True
        assert b.pre["correlated_agreement"] == (own[j].tolist(), peer[j].tolist())
        assert b.pre["loo_agreement"] == (own[j] == peer[j]).astype(float).tolist()
    solo = far["solo"]
    assert solo.pre.get("correlated_agreement") is None and solo.pre["loo_agreement"] == [0.0]
    unscreened = soft_vote_in_batches(queries)
    assert not any(b.no_copies for b in unscreened.values())


def test_window_counts_every_kind_of_response() -> None:
    window = IncentiveWindow(2, 5, 0, "loo_agreement")
    oq = _oq("a", {"p1": [0.9, 0.1], "p2": [0.8, 0.2], "p5": [math.nan, 1.0]},
             expected=frozenset({"p1", "p2", "p3", "p4", "p5", "p6", "p7"}))
    oq.late.add("p3")
    oq.declines["p4"] = "budget_exhausted"
    result, ids, outputs = build_result(oq, strategy="soft_vote", completed_at_ms=7, window=REF,
                                        copied=[(_answer("p6", [0.9, 0.1]), "p1")])
    window.add(result, ids, outputs)
    window.add(result.model_copy(update={"completed_at_ms": 8}), ids, outputs)
    window.add_late("p1")
    assert (window.results, window.first_completed_at_ms, window.last_completed_at_ms) == (
        2, 7, 8)
    counts = {e.participant_id: e.counts.model_dump() for e in window.close(budget=1.0)}
    zero = dict.fromkeys(("included", "late", "missing", "declined", "excluded", "copied"), 0)
    assert counts == {
        "p1": {**zero, "included": 2, "late": 1}, "p2": {**zero, "included": 2},
        "p3": {**zero, "late": 2}, "p4": {**zero, "declined": 2},
        "p5": {**zero, "excluded": 2}, "p6": {**zero, "copied": 2},
        "p7": {**zero, "missing": 2}}


def test_a_tallied_window_scores_what_a_recomputation_does_batched_or_not() -> None:
    rng = np.random.default_rng(3)
    queries = [_oq(f"q{i}", {p: rng.random(4).tolist() for p in ("p1", "p2", "p3")})
               for i in range(6)]
    batched = soft_vote_in_batches(queries)
    plain = IncentiveWindow(0, 0, 0, "correlated_agreement")
    fast = IncentiveWindow(0, 0, 0, "correlated_agreement")
    per_query = []
    for oq in queries:
        result, ids, outputs = build_result(oq, strategy="soft_vote", completed_at_ms=1,
                                            window=REF)
        assert outputs is not None
        plain.add(result, ids, outputs)
        fast.add(result, ids, outputs, batched[oq.query.query_id])
        per_query.append((ids, outputs))
    want = window_scores(per_query, "correlated_agreement")
    assert plain.current_scores() == fast.current_scores() == want
    assert plain.state == fast.state and "scores" not in plain.to_state()
