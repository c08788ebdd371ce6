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


# -- issue 12: marks, late counts, unserved queries, excluded rows -----------------------------

def test_a_re_read_open_query_keeps_the_committed_results_mark() -> None:
    """The resume-mark bug: after a restart that set results_next to the end of fi.results
    (say 40), a re-read open query (offset 5 < the end 9 at resume) got mark 40, which the
    next commit wrote as `results_from`, so a second restart skipped results 12..39 and
    emitted them again. Its mark must stay the committed results_from (12)."""
    from fi_stream.join import results_mark
    assert results_mark(5, replay_until=9, replay_from=12, results_next=40) == 12
    assert results_mark(9, replay_until=9, replay_from=12, results_next=40) == 40  # new query
    assert results_mark(5, replay_until=0, replay_from=0, results_next=7) == 7  # never resumed
    t = JoinTable()
    t.add_query(query("a"), 0, 5, EXPECTED, results_mark=results_mark(5, 9, 12, 40))
    t.add_query(query("b"), 0, 9, EXPECTED, results_mark=results_mark(9, 9, 12, 40))
    assert t.oldest_results_mark(0) == 12


def test_replayed_answers_to_a_closed_query_are_duplicates_not_late() -> None:
    t = JoinTable()
    t.add_query(query("a"), 0, 0, frozenset({"p1", "p2"}))
    t.add_batch(batch("p1", ["a"]), 0, 1, now_ms=10)
    t.add_batch(batch("p2", ["a"]), 0, 2, now_ms=10)
    [oq] = t.take_settled()
    t.close(oq, 20)
    t.add_batch(batch("p1", ["a"]), 0, 3, now_ms=30)  # a replayed batch
    t.add_query(query("a"), 0, 4, frozenset({"p1", "p2"}))  # a duplicate query id ...
    t.add_batch(batch("p2", ["a"]), 0, 5, now_ms=30)  # ... answered again
    assert t.late_after_result == []
    assert t.duplicates == 3


def test_a_query_nobody_is_expected_to_answer_settles_at_once() -> None:
    t = JoinTable()
    assert t.add_query(query("a"), 0, 0, frozenset()) == "open"
    assert [oq.query.query_id for oq in t.take_settled()] == ["a"]
    assert t.settle_without_join("r", 0, 5) == "open"
    assert t.settle_without_join("r", 0, 6) == "duplicate"
    t.mark_emitted(1, {"s"})
    assert t.settle_without_join("s", 1, 7) == "replayed"


def test_excluded_rows_count_as_responses_but_are_never_used() -> None:
    from fi_stream.results import build_result
    from schemas import WindowRef
    t = JoinTable()
    t.add_query(query("a"), 0, 0, frozenset({"p1", "p2"}))
    t.add_batch(batch("p1", ["a"]), 0, 1, now_ms=10, exclusions=["implausible_norm"])
    wide = batch("p2", ["a"])
    wide = wide.model_copy(update={"outputs": Tensor.from_numpy(np.ones((1, 7), np.float32))})
    t.add_batch(wide, 0, 2, now_ms=10)
    [oq] = t.take_settled()
    result, ids, _outputs = build_result(oq, strategy="soft_vote", completed_at_ms=20,
                                        window=WindowRef(partition=0, seq=0))
    assert ids == ["p2"] and result.status == "insufficient"  # quorum 2
    assert [(e.participant_id, e.reason) for e in result.excluded] == [("p1", "implausible_norm")]


def test_a_query_closed_then_lost_with_its_partition_is_answered_again_after_a_rejoin() -> None:
    """Found by `make test-faults` (broker SIGSTOP past the session timeout): the result
    of a closed query was in a transaction that aborted when the member was fenced; after
    the rejoin the re-read query was taken for a duplicate and never answered (2 lost)."""
    t = JoinTable()
    t.add_query(query("a"), 0, 5, EXPECTED)
    t.add_query(query("b"), 1, 7, EXPECTED)
    for pid in sorted(EXPECTED):
        t.add_batch(batch(pid, ["a"]), 0, 100, now_ms=1)
    [oq] = t.take_settled()
    t.close(oq, 2)  # its result goes into the outbox; the transaction then aborts
    t.close(t.take_due(1000)[0], 1000)  # "b", on a partition this member keeps
    t.drop_partition(0)  # fenced: the rebalance takes partition 0 away, then gives it back
    t.add_query(query("a"), 0, 5, EXPECTED)
    assert "a" in t.open and t.duplicates == 0
    t.add_query(query("b"), 1, 7, EXPECTED)  # partition 1 was kept: still a duplicate
    assert "b" not in t.open and t.duplicates == 1
