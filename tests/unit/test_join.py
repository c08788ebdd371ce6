"""The aggregator's join state machine, without Kafka."""

from __future__ import annotations

import numpy as np

from fi_stream.join import JoinTable
from schemas import Decline, Privacy, Query, ResponseBatch, Tensor

EXPECTED = frozenset({"p1", "p2", "p3"})


def query(qid: str, deadline: int = 1000) -> Query:
    return Query(query_id=qid, task="digits", input=Tensor.from_numpy(np.zeros(64, np.float32)),
                 created_at_ms=0, deadline_ms=deadline, quorum=2)


def batch(pid: str, answered: list[str], declined: tuple[str, ...] = (),
          produced_at: int = 10) -> ResponseBatch:
    rows = np.tile(np.eye(1, 10, k=int(pid[1:]), dtype=np.float32), (len(answered), 1))
    return ResponseBatch(
        participant_id=pid, batch_id=f"{pid}-b", task="digits", model_version="1",
        privacy=Privacy(clip_norm=1, noise_multiplier=0), produced_at_ms=produced_at,
        query_partition=0, answered=answered, outputs=Tensor.from_numpy(rows),
        declined=[Decline(query_id=q, reason="budget_exhausted") for q in declined])


def test_settles_when_every_expected_participant_responded() -> None:
    t = JoinTable()
    t.add_query(query("a"), 0, 5, EXPECTED)
    t.add_batch(batch("p1", ["a"]), 0, 100, now_ms=1)
    t.add_batch(batch("p2", ["a"]), 0, 101, now_ms=1)
    assert t.take_settled() == []
    t.add_batch(batch("p3", [], declined=("a",)), 0, 102, now_ms=1)
    [oq] = t.take_settled()
    assert set(oq.answers) == {"p1", "p2"} and oq.declines == {"p3": "budget_exhausted"}


def test_due_at_deadline_and_commit_positions_follow_the_oldest_open_query() -> None:
    t = JoinTable()
    t.add_query(query("a", deadline=100), 0, 5, EXPECTED)
    t.add_query(query("b", deadline=200), 0, 6, EXPECTED)
    t.add_batch(batch("p1", ["a", "b"]), 0, 40, now_ms=1)
    assert t.oldest_query_offset(0) == 5 and t.oldest_response_offset(0) == 40
    assert t.take_due(99) == []
    [oq] = t.take_due(100)
    t.close(oq, 100)
    assert t.oldest_query_offset(0) == 6 and t.oldest_response_offset(0) == 40
    [oq] = t.take_due(200)
    t.close(oq, 200)
    assert t.oldest_query_offset(0) is None and t.oldest_response_offset(0) is None


def test_duplicate_batches_count_once() -> None:
    t = JoinTable()
    t.add_query(query("a"), 0, 5, EXPECTED)
    t.add_batch(batch("p1", ["a"]), 0, 100, now_ms=1)
    t.add_batch(batch("p1", ["a"]), 0, 101, now_ms=1)  # redelivered
    assert len(t.open["a"].answers) == 1 and t.duplicates == 1


def test_answers_after_the_deadline_are_late_not_used() -> None:
    t = JoinTable()
    t.add_query(query("a", deadline=50), 0, 5, EXPECTED)
    t.add_batch(batch("p1", ["a"], produced_at=51), 0, 100, now_ms=60)
    oq = t.open["a"]
    assert oq.answers == {} and oq.late == {"p1"}


def test_responses_before_their_query_wait_and_then_attach() -> None:
    t = JoinTable()
    t.add_batch(batch("p1", ["a"]), 0, 100, now_ms=1)
    assert t.oldest_response_offset(0) == 100
    t.add_query(query("a"), 0, 5, EXPECTED)
    assert set(t.open["a"].answers) == {"p1"}


def test_answers_after_the_result_are_recorded_as_late() -> None:
    t = JoinTable()
    t.add_query(query("a", deadline=10), 0, 5, EXPECTED)
    [oq] = t.take_due(10)
    t.close(oq, 10)
    t.add_batch(batch("p2", ["a"], produced_at=5), 0, 100, now_ms=20)
    assert t.late_after_result == [("p2", 0)]
    assert t.oldest_response_offset(0) is None


def test_orphan_responses_expire() -> None:
    t = JoinTable(pending_ttl_ms=100)
    t.add_batch(batch("p1", ["never"]), 0, 100, now_ms=0)
    assert t.expire(now_ms=100) == 1
    assert t.oldest_response_offset(0) is None


def test_a_query_read_twice_is_joined_once() -> None:
    t = JoinTable()
    t.add_query(query("a"), 0, 5, EXPECTED)
    t.add_query(query("a"), 0, 5, EXPECTED)
    assert t.duplicates == 1 and len(t.open) == 1


def test_memory_stays_bounded_when_a_participant_is_missing_for_minutes() -> None:
    """10 simulated minutes at 100 queries/s, p3 silent, p4 answering queries nobody asked:
    open joins are bounded by rate × deadline, orphans and finished ids expire."""
    t = JoinTable(pending_ttl_ms=5_000, done_ttl_ms=5_000)
    peak_open = peak_done = 0
    for i in range(60_000):
        now = i * 10
        qid = f"q{i}"
        t.add_query(query(qid, deadline=now + 2_000), 0, i, EXPECTED)
        t.add_batch(batch("p1", [qid]), 0, 2 * i, now_ms=now)
        t.add_batch(batch("p4", [f"ghost{i}"]), 0, 2 * i + 1, now_ms=now)
        for oq in t.take_due(now):
            t.close(oq, now)
        t.expire(now)
        peak_open, peak_done = max(peak_open, len(t.open)), max(peak_done, len(t._done))
    assert peak_open <= 201
    assert peak_done <= 501
    assert len(t._pending) <= 501
    assert t.oldest_response_offset(0) is not None  # orphans still in the window are kept
