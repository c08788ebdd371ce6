"""The join table's edges, pinned one by one (issue 18: each test kills a mutmut survivor).

Redelivered late and excluded answers, a row of the wrong width, deferred deadlines, the
TTL bounds, queries settled without a join, and what `drop_partition` keeps.
"""

from __future__ import annotations

import numpy as np

from fi_stream.join import JoinTable
from schemas import Decline, Privacy, Query, ResponseBatch, Tensor

EXPECTED = frozenset({"p1", "p2", "p3"})


def query(qid: str, deadline: int = 1000) -> Query:
    return Query(query_id=qid, task="digits", input=Tensor.from_numpy(np.zeros(64, np.float32)),
                 created_at_ms=0, deadline_ms=deadline, quorum=2)


def batch(pid: str, answered: list[str], declined: tuple[str, ...] = (),
          produced_at: int = 10, width: int = 10) -> ResponseBatch:
    rows = np.full((len(answered), width), 0.5, dtype=np.float32)
    return ResponseBatch(
        participant_id=pid, batch_id=f"{pid}-b", task="digits", model_version="1",
        privacy=Privacy(clip_norm=1, noise_multiplier=0), produced_at_ms=produced_at,
        query_partition=0, answered=answered, outputs=Tensor.from_numpy(rows),
        declined=[Decline(query_id=q, reason="budget_exhausted") for q in declined])


def test_a_row_of_another_width_is_excluded_as_wrong_width_with_its_origin() -> None:
    t = JoinTable()
    t.add_query(query("a"), 0, 5, EXPECTED)
    t.add_batch(batch("p1", ["a"]), 0, 100, now_ms=1)
    t.add_batch(batch("p2", ["x", "a"], produced_at=7, width=5), 2, 101, now_ms=1)
    oq = t.open["a"]
    assert oq.answers["p1"].participant_id == "p1" and set(oq.answers) == {"p1"}
    bad = oq.excluded["p2"]
    assert (bad.participant_id, bad.partition, bad.offset, bad.index, bad.produced_at_ms,
            bad.excluded) == ("p2", 2, 101, 1, 7, "wrong_width")
    assert bad.vector.shape == (5,)


def test_an_excluded_row_is_not_reclassified() -> None:
    t = JoinTable()
    t.add_query(query("a"), 0, 5, EXPECTED)
    t.add_batch(batch("p1", ["a"]), 0, 100, now_ms=1)
    t.add_batch(batch("p2", ["a"], width=5), 0, 101, now_ms=1, exclusions=["non_finite"])
    assert t.open["a"].excluded["p2"].excluded == "non_finite"


def test_redelivered_late_and_excluded_answers_are_duplicates() -> None:
    t = JoinTable()
    t.add_query(query("a", deadline=50), 0, 5, EXPECTED)
    t.add_batch(batch("p1", ["a"], produced_at=60), 0, 100, now_ms=1)  # late
    t.add_batch(batch("p2", ["a"]), 0, 101, now_ms=1, exclusions=["non_finite"])
    t.add_batch(batch("p1", ["a"], produced_at=60), 0, 102, now_ms=1)
    t.add_batch(batch("p2", ["a"]), 0, 103, now_ms=1, exclusions=["non_finite"])
    assert t.duplicates == 2
    oq = t.open["a"]
    assert oq.late == {"p1"} and set(oq.excluded) == {"p2"} and oq.answers == {}


def test_a_decline_before_its_query_waits_on_its_partition_and_expires() -> None:
    t = JoinTable(pending_ttl_ms=100)
    t.add_batch(batch("p1", [], declined=("a",)), 3, 40, now_ms=5)
    t.add_batch(batch("p2", ["a"]), 3, 41, now_ms=6)
    assert t.oldest_response_offset(3) == 40
    assert t.expire(now_ms=104) == 0  # the pending TTL counts from when it was seen
    assert t.expire(now_ms=105) == 2  # one query id, two waiting responses
    assert t.expire(now_ms=106) == 0  # its second order entry finds nothing left
    assert t.oldest_response_offset(3) is None


def test_a_deferred_query_is_due_again_and_closed_ones_have_no_deadline() -> None:
    t = JoinTable()
    assert t.next_deadline_ms() is None
    t.add_query(query("a", deadline=10), 0, 5, EXPECTED)
    t.add_query(query("b", deadline=20), 0, 6, EXPECTED)
    [oq] = t.take_due(10)
    t.defer(oq, 30)
    assert t.next_deadline_ms() == 20
    [b] = t.take_due(20)
    t.close(b, 20)
    assert t.next_deadline_ms() == 30
    assert t.take_due(29) == [] and t.take_due(30) == [oq]
    t.close(oq, 30)
    assert t.next_deadline_ms() is None


def test_closed_ids_are_remembered_for_exactly_their_ttl() -> None:
    t = JoinTable(done_ttl_ms=100)
    t.add_query(query("a"), 0, 5, EXPECTED)
    [oq] = t.take_due(1000)
    t.close(oq, 1000)
    t.expire(now_ms=1099)
    assert t.add_query(query("a"), 0, 5, EXPECTED) == "duplicate"
    t.expire(now_ms=1100)
    assert t.add_query(query("a"), 0, 5, EXPECTED) == "open"


def test_settled_without_join_counts_duplicates_and_takes_late_answers() -> None:
    t = JoinTable(done_ttl_ms=100)
    assert t.settle_without_join("a", 1, now_ms=0) == "open"
    assert t.settle_without_join("a", 1, now_ms=0) == "duplicate"
    assert t.settle_without_join("a", 1, now_ms=0) == "duplicate"
    assert t.duplicates == 2
    t.add_batch(batch("p1", ["a"]), 1, 7, now_ms=1)
    assert t.late_after_result == [("p1", 1)]
    t.drop_partition(1)  # a lost partition forgets what it settled
    assert t.settle_without_join("a", 1, now_ms=2) == "open"
    assert t.expire(now_ms=102) == 0
    assert t.settle_without_join("a", 1, now_ms=3) == "open"


def test_emitted_marks_accumulate_until_the_partition_is_dropped() -> None:
    t = JoinTable()
    t.mark_emitted(1, {"a"})
    t.mark_emitted(1, {"b"})
    assert t.add_query(query("a"), 1, 5, EXPECTED) == "replayed"
    assert t.add_query(query("b"), 1, 6, EXPECTED) == "replayed"
    t.drop_partition(1)
    assert t.add_query(query("a"), 1, 5, EXPECTED) == "open"


def test_dropping_a_partition_keeps_the_others() -> None:
    t = JoinTable()
    t.drop_partition(9)  # never seen: nothing to forget, no error
    t.add_query(query("kept"), 0, 5, frozenset())  # settled at once, not taken yet
    t.add_query(query("gone"), 1, 7, EXPECTED, results_mark=3)
    t.add_batch(batch("p1", ["later0"]), 0, 50, now_ms=1)
    t.add_batch(batch("p1", ["later1"]), 1, 60, now_ms=1)
    assert t.oldest_results_mark(1) == 3
    t.drop_partition(1)
    assert set(t.open) == {"kept"} and [oq.query.query_id for oq in t.take_settled()] == ["kept"]
    assert t.oldest_query_offset(1) is None and t.oldest_response_offset(1) is None
    assert t.oldest_results_mark(1) is None
    assert t.oldest_query_offset(0) == 5 and t.oldest_response_offset(0) == 50
    t.add_query(query("later0"), 0, 8, EXPECTED)
    assert set(t.open["later0"].answers) == {"p1"}
    t.add_query(query("later1"), 1, 9, EXPECTED)
    assert t.open["later1"].answers == {}
    t.drop_partition(1)
    t.drop_partition(1)  # twice: still no error
