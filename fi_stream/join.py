"""The aggregator's join state: pure, no Kafka, no clock of its own (times are arguments).

One `JoinTable` per aggregator. Queries and response batches come in (with their log
positions); settled queries (every expected participant answered or declined) and due
queries (deadline passed) come out. It also says how far each input partition may be
committed: never past a record that an open query still needs after a restart.
"""

from __future__ import annotations

import heapq
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from fi_stream.block_state import MinTracker
from schemas import DeclineReason, ExclusionReason, Query, ResponseBatch

#: What `JoinTable.add_query` did with a query record.
Added = Literal["open", "replayed", "duplicate"]


@dataclass(frozen=True, slots=True)
class Answer:
    participant_id: str
    vector: np.ndarray[Any, Any]
    partition: int
    offset: int
    index: int
    produced_at_ms: int
    #: Why the row may not be used (fi_stream.validation.screen_rows); None: usable.
    excluded: ExclusionReason | None = None
    #: Whether every value of `vector` is finite, when known (`JoinTable.add_batch`
    #: checks a record's rows at once); None: `build_result` checks the row itself.
    finite: bool | None = field(default=None, compare=False)


@dataclass(slots=True)
class OpenQuery:
    query: Query
    partition: int
    offset: int
    expected: frozenset[str]
    answers: dict[str, Answer] = field(default_factory=dict)
    declines: dict[str, DeclineReason] = field(default_factory=dict)
    late: set[str] = field(default_factory=set)
    #: Answers left out as implausible, with why (`Answer.excluded`).
    excluded: dict[str, Answer] = field(default_factory=dict)
    response_refs: list[tuple[int, int]] = field(default_factory=list)  # (partition, offset)
    #: Expected participants that have neither answered nor declined yet.
    waiting: set[str] = field(init=False)

    def __post_init__(self) -> None:
        self.waiting = set(self.expected)

    @property
    def settled(self) -> bool:
        """Every expected participant has answered or declined (or none is expected, e.g.
        a task nobody serves): nothing left to wait for."""
        return not self.waiting

    @property
    def responded(self) -> set[str]:
        return self.answers.keys() | self.declines.keys() | self.late | self.excluded.keys()


@dataclass(frozen=True, slots=True)
class _Pending:
    """A response for a query this aggregator has not read yet (the topics race)."""

    participant_id: str
    answer: Answer | None
    decline: DeclineReason | None
    offset: int
    partition: int


def results_mark(offset: int, replay_until: int, replay_from: int, results_next: int) -> int:
    """Where in fi.results a restarted owner must look for the result of the query at
    `offset` (the query's `results_from` mark).

    A query below `replay_until` (the queries partition's end when this owner resumed it)
    may have been read, and answered, by a former owner after `replay_from` (the
    committed `results_from`); a later one can only be answered by this owner, after
    `results_next` (the end of fi.results it has seen). Using `results_next` for a
    re-read query would move the mark past results already emitted, and a second restart
    would emit them again.
    """
    return min(replay_from, results_next) if offset < replay_until else results_next


class JoinTable:
    def __init__(self, *, pending_ttl_ms: int = 60_000, done_ttl_ms: int = 60_000) -> None:
        self.open: dict[str, OpenQuery] = {}
        self._pending: dict[str, list[_Pending]] = defaultdict(list)
        self._pending_order: deque[tuple[int, str]] = deque()
        #: Closed queries: when, and who had responded (a replayed answer is not late).
        self._done: dict[str, tuple[int, set[str]]] = {}
        self._done_order: deque[tuple[int, str]] = deque()
        #: The partition of each closed query: a lost partition forgets its closed queries.
        self._done_partition: dict[str, int] = {}
        self._deadlines: list[tuple[int, str]] = []
        self._settled: list[str] = []
        self._query_offsets: dict[int, MinTracker] = defaultdict(MinTracker)
        self._response_offsets: dict[int, MinTracker] = defaultdict(MinTracker)
        #: partition → query offset → the fi.results offset from which a restarted owner
        #: must look for the results of the record's queries, and how many are still open
        #: (a query block's rows share one record: its mark stays until the last closes).
        self._marks: dict[int, dict[int, list[int]]] = defaultdict(dict)
        self.pending_ttl_ms = pending_ttl_ms
        self.done_ttl_ms = done_ttl_ms
        self.duplicates = 0
        #: Queries whose result an earlier owner of the partition already emitted (replay).
        self._emitted_before: dict[int, set[str]] = defaultdict(set)
        #: (participant_id, query partition) of answers that came after the result was out.
        self.late_after_result: list[tuple[str, int]] = []

    # -- input ------------------------------------------------------------------------------

    def add_query(self, query: Query, partition: int, offset: int,
                  expected: frozenset[str], results_mark: int = 0) -> Added:
        """Open a query. `results_mark`: the fi.results offset from which a restarted owner
        must look for its result (see `fi_stream.resume.results_mark`). A query nobody is
        expected to answer is settled at once."""
        qid = query.query_id
        if qid in self._emitted_before[partition]:
            return "replayed"  # re-read after a restart or rebalance: its result is out
        if qid in self.open or qid in self._done:
            self.duplicates += 1
            return "duplicate"
        oq = OpenQuery(query=query, partition=partition, offset=offset, expected=expected)
        self.open[qid] = oq
        self._query_offsets[partition].add(offset)
        held = self._marks[partition].get(offset)
        if held is None:
            self._marks[partition][offset] = [results_mark, 1]
        else:  # another row of the same record: the first row's mark is the record's
            held[1] += 1
        heapq.heappush(self._deadlines, (query.deadline_ms, qid))
        for p in self._pending.pop(qid, []):
            self._response_offsets[p.partition].remove(p.offset)
            self._attach(oq, p.participant_id, p.answer, p.decline, p.partition, p.offset)
        if oq.settled:
            self._settled.append(qid)
        return "open"

    def add_batch(self, batch: ResponseBatch, partition: int, offset: int, now_ms: int,
                  exclusions: Sequence[ExclusionReason | None] | None = None) -> None:
        """Route a verified batch's answers and declines. `exclusions[i]`: why row i may
        not be used (from `fi_stream.validation.screen_rows`); such a row counts as the
        participant's (unusable) answer and is listed in the result's `excluded`."""
        pid = batch.participant_id
        rows = batch.outputs.to_numpy()
        # One numpy pass for the record instead of one per answer in build_result.
        finite: list[bool | None] = (np.isfinite(rows).all(axis=1).tolist()
                                     if rows.ndim == 2 else [None] * len(batch.answered))
        for index, qid in enumerate(batch.answered):
            answer = Answer(pid, rows[index], partition, offset, index, batch.produced_at_ms,
                            exclusions[index] if exclusions is not None else None,
                            finite[index])
            self._route(qid, pid, answer, None, partition, offset, now_ms)
        for decline in batch.declined:
            self._route(decline.query_id, pid, None, decline.reason, partition, offset, now_ms)

    def _route(self, qid: str, pid: str, answer: Answer | None, decline: DeclineReason | None,
               partition: int, offset: int, now_ms: int) -> None:
        oq = self.open.get(qid)
        if oq is not None:
            self._attach(oq, pid, answer, decline, partition, offset)
        elif qid in self._emitted_before[partition]:  # responses are co-partitioned
            return
        elif qid in self._done:
            responders = self._done[qid][1]
            if pid in responders:
                self.duplicates += 1  # a replayed batch or a duplicate query id's answer
            elif answer is not None:
                responders.add(pid)
                self.late_after_result.append((pid, partition))
        else:
            self._pending[qid].append(_Pending(pid, answer, decline, offset, partition))
            self._pending_order.append((now_ms, qid))
            self._response_offsets[partition].add(offset)

    def _attach(self, oq: OpenQuery, pid: str, answer: Answer | None,
                decline: DeclineReason | None, partition: int, offset: int) -> None:
        if (pid in oq.answers or pid in oq.declines or pid in oq.late
                or pid in oq.excluded):
            self.duplicates += 1  # redelivered batch: at-least-once upstream, once here
            return
        if answer is not None:
            if answer.produced_at_ms > oq.query.deadline_ms:
                oq.late.add(pid)
                return
            if answer.excluded is None and oq.answers:
                width = next(iter(oq.answers.values())).vector.shape
                if answer.vector.shape != width:  # rows of one query must stack
                    answer = Answer(answer.participant_id, answer.vector, answer.partition,
                                    answer.offset, answer.index, answer.produced_at_ms,
                                    "wrong_width")
            if answer.excluded is not None:
                oq.excluded[pid] = answer
            else:
                oq.answers[pid] = answer
        elif decline is not None:
            oq.declines[pid] = decline
        oq.waiting.discard(pid)
        oq.response_refs.append((partition, offset))
        self._response_offsets[partition].add(offset)
        if oq.settled:
            self._settled.append(oq.query.query_id)

    # -- output -----------------------------------------------------------------------------

    def take_settled(self) -> list[OpenQuery]:
        out = [self.open[q] for q in dict.fromkeys(self._settled) if q in self.open]
        self._settled.clear()
        return out

    def take_due(self, now_ms: int) -> list[OpenQuery]:
        out: list[OpenQuery] = []
        while self._deadlines and self._deadlines[0][0] <= now_ms:
            _, qid = heapq.heappop(self._deadlines)
            oq = self.open.get(qid)
            if oq is not None:
                out.append(oq)
        return out

    def defer(self, oq: OpenQuery, until_ms: int) -> None:
        """Look at a due query again at `until_ms` (its responses may still be unread)."""
        heapq.heappush(self._deadlines, (until_ms, oq.query.query_id))

    def next_deadline_ms(self) -> int | None:
        while self._deadlines and self._deadlines[0][1] not in self.open:
            heapq.heappop(self._deadlines)
        return self._deadlines[0][0] if self._deadlines else None

    def close(self, oq: OpenQuery, now_ms: int) -> None:
        """The result is out: forget the query's state, remember its id for a while."""
        qid = oq.query.query_id
        del self.open[qid]
        self._query_offsets[oq.partition].remove(oq.offset)
        held = self._marks[oq.partition].get(oq.offset)
        if held is not None:
            held[1] -= 1
            if held[1] <= 0:
                del self._marks[oq.partition][oq.offset]
        for partition, offset in oq.response_refs:
            self._response_offsets[partition].remove(offset)
        self._done[qid] = (now_ms, oq.responded)
        self._done_order.append((now_ms, qid))
        self._done_partition[qid] = oq.partition

    def expire(self, now_ms: int) -> int:
        """Drop remembered ids and orphan responses older than their TTL; returns orphans."""
        while self._done_order and self._done_order[0][0] <= now_ms - self.done_ttl_ms:
            at, qid = self._done_order.popleft()
            if qid in self._done and self._done[qid][0] == at:
                del self._done[qid]
                self._done_partition.pop(qid, None)
        orphans = 0
        while self._pending_order and self._pending_order[0][0] <= now_ms - self.pending_ttl_ms:
            _, qid = self._pending_order.popleft()
            for p in self._pending.pop(qid, []):
                self._response_offsets[p.partition].remove(p.offset)
                orphans += 1
        return orphans

    def settle_without_join(self, qid: str, partition: int, now_ms: int) -> Added:
        """A query answered at once, without opening it (rejected, or nobody serves its
        task): "open" means its result is to be emitted now; "replayed"/"duplicate" that
        it was already (its answers, if any come, are then duplicates, not late)."""
        if qid in self._emitted_before[partition]:
            return "replayed"
        if qid in self.open or qid in self._done:
            self.duplicates += 1
            return "duplicate"
        self._done[qid] = (now_ms, set())
        self._done_order.append((now_ms, qid))
        self._done_partition[qid] = partition
        return "open"

    def mark_emitted(self, partition: int, query_ids: set[str]) -> None:
        """Results found in the log for these ids: re-reading them must emit nothing."""
        self._emitted_before[partition] |= query_ids

    def drop_partition(self, partition: int) -> None:
        """Forget everything of a partition this aggregator no longer owns (a rebalance):
        the new owner rebuilds it from the committed offsets."""
        for qid in [q for q, oq in self.open.items() if oq.partition == partition]:
            del self.open[qid]
        for qid in [q for q, ps in self._pending.items()
                    if all(p.partition == partition for p in ps)]:
            del self._pending[qid]
        self._query_offsets.pop(partition, None)
        self._response_offsets.pop(partition, None)
        self._marks.pop(partition, None)
        self._settled = [q for q in self._settled if q in self.open]
        self._emitted_before.pop(partition, None)
        # Closed here but perhaps never committed: a result emitted into a transaction
        # that was then aborted (the member was fenced, or lost its partitions with the
        # result still in its outbox). Re-read after a rejoin, such a query must be
        # answered again, not taken for a duplicate; a result that did commit is found
        # by the resume scan (`mark_emitted`).
        for qid in [q for q, p in self._done_partition.items() if p == partition]:
            del self._done_partition[qid]
            self._done.pop(qid, None)

    # -- commit positions -------------------------------------------------------------------

    def oldest_results_mark(self, partition: int) -> int | None:
        """Results mark of the partition's oldest open query: the smallest, since queries
        are read in offset order and the mark only grows."""
        oldest = self.oldest_query_offset(partition)
        held = None if oldest is None else self._marks[partition].get(oldest)
        return None if held is None else held[0]

    def oldest_query_offset(self, partition: int) -> int | None:
        return self._query_offsets[partition].min()

    def oldest_response_offset(self, partition: int) -> int | None:
        return self._response_offsets[partition].min()
