"""From joins to Results and incentive windows: statuses, weights, resumable window state."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import orjson

from fi_stream.aggregation import aggregate
from fi_stream.incentives import split_rewards, window_scores
from fi_stream.join import Answer, JoinTable, OpenQuery
from fi_stream.results import IncentiveWindow, build_result, soft_vote_in_batches, status_of
from fi_stream.strategies import stateful_strategies
from schemas import WindowRef, encode

from .test_join import EXPECTED, batch, query


def _joined(answering: tuple[str, ...] = ("p1", "p2", "p3")):  # type: ignore[no-untyped-def]
    t = JoinTable()
    t.add_query(query("a"), 0, 5, EXPECTED)
    for offset, pid in enumerate(answering):
        t.add_batch(batch(pid, ["a"]), 0, 100 + offset, now_ms=1)
    return t.open["a"]


def test_statuses() -> None:
    assert status_of(3, 2, 0) == "complete"
    assert status_of(2, 2, 1) == "partial"
    assert status_of(1, 2, 2) == "insufficient"


def test_result_lists_its_answers_and_missing_ids() -> None:
    result, ids, outputs = build_result(_joined(("p1", "p3")), strategy="soft_vote",
                                        completed_at_ms=9, window=WindowRef(partition=0, seq=0))
    assert ids == ["p1", "p3"] and result.missing == ["p2"] and result.status == "partial"
    assert [(a.participant_id, a.offset) for a in result.included] == [("p1", 100), ("p3", 101)]
    assert outputs is not None and result.aggregate is not None
    assert result.aggregate.to_numpy().tobytes() == aggregate(outputs).vector.tobytes()


def test_weighted_strategies_record_their_weights() -> None:
    result, _, outputs = build_result(_joined(), strategy="reward_weighted", completed_at_ms=9,
                                      window=WindowRef(partition=0, seq=0),
                                      weights={"p1": 5.0, "p3": 1.0})
    assert result.weights == [5.0, 0.0, 1.0] and result.prediction == 1
    assert outputs is not None
    again = aggregate(outputs, "reward_weighted", weights=result.weights)
    assert result.aggregate is not None
    assert result.aggregate.to_numpy().tobytes() == again.vector.tobytes()


def test_window_tallies_equal_a_recomputation_and_survive_a_restart() -> None:
    rng = np.random.default_rng(0)
    window = IncentiveWindow(0, 3, 0, "loo_agreement")
    per_query = []
    for i in range(20):
        result, ids, outputs = build_result(_joined(), strategy="soft_vote",
                                            completed_at_ms=i, window=window.ref)
        outputs = rng.random((3, 10))
        window.add(result, ids, outputs)
        per_query.append((ids, outputs))
        if i == 9:  # a restart: the window continues from its committed state
            window = IncentiveWindow.from_state(window.to_state())
    incentives = window.close(budget=60.0)
    scores = window_scores(per_query, "loo_agreement")
    assert {i.participant_id: i.score for i in incentives} == scores
    assert {i.participant_id: i.reward for i in incentives} == split_rewards(scores, 60.0)
    assert all(i.window.results == 20 and i.window.seq == 3 for i in incentives)


def test_window_state_holds_every_field_and_the_method_state_under_its_key() -> None:
    window = IncentiveWindow(2, 5, 7, "loo_cosine")
    result, ids, _ = build_result(_joined(), strategy="soft_vote", completed_at_ms=1,
                                  window=window.ref)
    window.add(result, ids, np.random.default_rng(0).random((3, 10)))
    state = orjson.loads(orjson.dumps(window.to_state()))
    assert set(state) == {f.name for f in fields(IncentiveWindow) if f.init} - {"state"} | {
        "scores"}  # loo_cosine's state_key: the layout earlier versions wrote
    again = IncentiveWindow.from_state(state)
    assert again.to_state() == state


def test_spectral_weights_of_a_window() -> None:
    spectral = stateful_strategies()["spectral"].from_state(None)
    rng = np.random.default_rng(1)
    for _ in range(10):
        _, ids, _ = build_result(_joined(), strategy="soft_vote", completed_at_ms=1,
                                 window=WindowRef(partition=0, seq=0))
        spectral.observe(ids, rng.random((3, 10)))
    assert spectral.weights() is None  # until the window closes
    spectral.close_window({})
    weights = spectral.weights()
    assert weights is not None and set(weights) == {"p1", "p2", "p3"}
    assert abs(sum(weights.values()) - 1) < 1e-12


def test_the_batched_soft_vote_emits_byte_for_byte_what_the_per_query_path_does() -> None:
    """`soft_vote_in_batches` (the aggregator's path for settled queries) must give the same
    Result bytes and window tallies as the per-query functions the audit recomputes with."""
    rng = np.random.default_rng(3)
    everyone = ("p1", "p2", "p3", "p4", "p5")
    joins = []
    for i in range(60):
        answering = everyone if i % 3 else ("p2", "p4", "p5")  # two participant sets
        oq = OpenQuery(query(f"q{i:02d}"), 0, i, frozenset(everyone))
        for k, pid in enumerate(rng.permutation(answering)):  # arrival order varies
            vector = rng.normal(0.1, 0.4, 10).astype(np.float32)
            if i == 4:
                vector[:] = 0.0  # all-zero rows project to uniform
            if i == 5:
                vector[:2] = 1.0  # ties
            oq.answers[str(pid)] = Answer(str(pid), vector, 0, 100 + i, k, 1)
        joins.append(oq)

    batched = soft_vote_in_batches(joins)
    assert set(batched) == {oq.query.query_id for oq in joins}
    emitted: dict[str, list[bytes]] = {"per query": [], "batched": []}
    windows = {path: IncentiveWindow(0, 0, 0, "loo_agreement") for path in emitted}
    for oq in joins:
        for path, window in windows.items():
            pre = batched[oq.query.query_id] if path == "batched" else None
            result, ids, outputs = build_result(oq, strategy="soft_vote", completed_at_ms=7,
                                                window=window.ref, batched=pre)
            window.add(result, ids, outputs, pre)
            emitted[path].append(encode(result))
    assert emitted["batched"] == emitted["per query"]
    assert windows["batched"].to_state() == windows["per query"].to_state()
