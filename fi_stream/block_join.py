"""The aggregator's join state for query blocks: pure, no Kafka, no clock (times are arguments).

`fi_stream.join.JoinTable` does the same per query; this table keeps one `OpenBlock` per
query block and does the per-query work as numpy masks over the block's N rows, so a block
costs O(P) Python operations (P participants) however large N is.

Settling and deadlines (the rule)
---------------------------------
A participant's response record answers whole query blocks (one span each, several blocks
of one partition per record), row for row, so every row of a block hears from a
participant at the same moment. A row is *settled* when every expected
participant has answered, declined or been excluded on it; hence, in the common case, all
of a block's open rows settle together, when the last expected response block arrives. A
row answered after its own deadline (`produced_at_ms > deadline_ms[n]`) is *late* for that
row only and, as today, does not count as a response: the row waits for its deadline.

A block is *due* at the earliest deadline among its still-open rows; `take_due(now)`
hands out exactly the open rows whose deadline has passed, and the block is due again at
the next one. Each query is therefore emitted when `JoinTable` would emit it: at settle,
or at its own deadline (never earlier, so a slower participant keeps the time it had;
never later, so no deadline is missed because a neighbour in the block has a later one).

Exactly-once resume uses the same marks as `JoinTable`: a query block's offset is held
until every row is closed; a response block's offset while any open row it answered,
declined or was excluded on is still open (late rows do not hold it, as today; a record
of several spans is held by each of them: the offsets are a multiset); a span whose query
block is not read yet holds its record's offset until attached or expired.
"""

from __future__ import annotations

import heapq
import itertools
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Literal

import numpy as np

from fi_stream.block_state import (
    ANSWERED,
    LATE,
    NONE,
    Codes,
    Mask,
    MinTracker,
    OpenBlock,
    Part,
    Ready,
    exclusion_codes,
    parts_of,
)
from schemas.blocks import DECLINED_BASE, EXCLUDED_BASE, EXCLUSION_CODES, QueryBlock, ResponseBlock

#: What `BlockJoinTable.add_block` did with a query block (as `fi_stream.join.Added`).
Added = Literal["open", "replayed", "duplicate"]
#: What `BlockJoinTable.add_response` did with one span of a response record.
#: "late": it only answered rows whose results were out (`late_after_result`);
#: "mismatch": the span's rows are not the block's N.
Routed = Literal["attached", "pending", "replayed", "duplicate", "late", "mismatch"]


@dataclass(frozen=True, slots=True, eq=False)
class _Pending:
    part: Part
    partition: int
    offset: int
    seen_at_ms: int


__all__ = ["Added", "BlockJoinTable", "OpenBlock", "Part", "Ready", "Routed", "exclusion_codes",
           "parts_of"]


class BlockJoinTable:
    def __init__(self, *, pending_ttl_ms: int = 60_000, done_ttl_ms: int = 60_000) -> None:
        self.open: dict[str, OpenBlock] = {}
        self._pending: dict[str, list[_Pending]] = defaultdict(list)
        self._pending_order: deque[tuple[int, str]] = deque()
        #: Closed blocks (kept for late answers and duplicates): when, partition, state
        #: (None: settled without a join, nobody was asked).
        self._done: dict[str, tuple[int, int, OpenBlock | None]] = {}
        self._done_order: deque[tuple[int, str]] = deque()
        self._deadlines: list[tuple[int, int, str]] = []
        self._seq = itertools.count()
        self._settled: dict[str, None] = {}
        self._query_offsets: dict[int, MinTracker] = defaultdict(MinTracker)
        self._response_offsets: dict[int, MinTracker] = defaultdict(MinTracker)
        self._marks: dict[int, dict[int, int]] = defaultdict(dict)
        #: partition → block id → rows whose results an earlier owner emitted.
        self._emitted_before: dict[int, dict[str, list[int]]] = defaultdict(dict)
        self.pending_ttl_ms = pending_ttl_ms
        self.done_ttl_ms = done_ttl_ms
        #: Duplicate query blocks and response blocks (records, not rows).
        self.duplicates = 0
        #: (participant_id, query partition, rows) answered after their results were out.
        self.late_after_result: list[tuple[str, int, int]] = []

    # -- input ------------------------------------------------------------------------------

    def add_block(self, block: QueryBlock, partition: int, offset: int,
                  expected: frozenset[str], results_mark: int = 0, *,
                  closed: Mask | None = None, now_ms: int = 0) -> Added:
        """Open a query block. `closed`: rows the caller settles itself without a join
        (rejected), whose results it emits now (those not in `OpenBlock.replayed`).
        "replayed": every row's result is already out; "duplicate": the block is open or
        was closed recently."""
        bid, n = block.block_id, len(block)
        replayed = np.zeros(n, np.bool_)
        rows = self._emitted_before[partition].get(bid)
        if rows:
            replayed[rows] = True
            if replayed.all():
                return "replayed"
        if bid in self.open or bid in self._done:
            self.duplicates += 1
            return "duplicate"
        still = ~replayed if closed is None else ~replayed & ~np.asarray(closed, np.bool_)
        ob = OpenBlock(block, partition, offset, expected, replayed, still)
        self.open[bid] = ob
        self._query_offsets[partition].add(offset)
        self._marks[partition][offset] = results_mark
        for p in self._pending.pop(bid, []):
            self._response_offsets[p.partition].remove(p.offset)
            self._attach(ob, p.part, p.partition, p.offset)
        self._after_change(ob, now_ms)
        return "open"

    def add_response(self, response: ResponseBlock, partition: int, offset: int, now_ms: int,
                     exclusions: Codes | None = None) -> list[Routed]:
        """Route a verified response record: each span's rows to its query block (open,
        pending or closed); what became of each span, in record order. `exclusions[r]`
        (per record row): 0, or the role code (EXCLUDED_BASE + k) of why answered row r
        may not be used (`exclusion_codes`)."""
        return [self._route(part, partition, offset, now_ms)
                for part in parts_of(response, exclusions)]

    def _route(self, part: Part, partition: int, offset: int, now_ms: int) -> Routed:
        bid = part.block_id
        ob = self.open.get(bid)
        if ob is not None:
            routed = self._attach(ob, part, partition, offset)
            if routed == "attached" and ob.settled_rows().any():
                self._settled[bid] = None
            return routed
        if bid in self._done:
            done = self._done[bid][2]
            return "replayed" if done is None else self._attach(done, part, partition, offset)
        if bid in self._emitted_before[partition]:  # responses are co-partitioned
            return "replayed"
        self._pending[bid].append(_Pending(part, partition, offset, now_ms))
        self._pending_order.append((now_ms, bid))
        self._response_offsets[partition].add(offset)
        return "pending"

    def _attach(self, ob: OpenBlock, part: Part, partition: int, offset: int) -> Routed:
        if len(part) != len(ob.block):
            return "mismatch"  # not an answer to this block, row for row
        j = ob.col(part.participant_id)
        answered = part.status == 0
        late_rows = self._late_after_result(ob, j, answered)
        if ob.refs[j] is not None or not ob.open.any():
            if late_rows:
                return "late"
            self.duplicates += 1  # a redelivered response: once here
            return "duplicate"
        ob.refs[j] = (partition, offset)
        ob.outputs[j] = part.outputs
        ob.index[j] = part.index
        rows = ob.open
        late = rows & answered & (part.produced_at_ms > ob.block.deadline_ms)
        ok = rows & answered & ~late
        excluded = np.zeros(len(ob.block), np.uint8)
        if part.exclusions is not None:
            excluded = np.where(ok, part.exclusions, 0).astype(np.uint8)
        width = part.outputs.shape[1] if part.outputs.ndim == 2 else -2
        usable = ok & (excluded == 0)
        wrong = usable & (ob.width >= 0) & (ob.width != width)  # rows of one query must stack
        excluded[wrong] = EXCLUDED_BASE + EXCLUSION_CODES.index("wrong_width")
        usable &= ~wrong
        ob.width[usable & (ob.width < 0)] = width
        declined = rows & ~answered
        role = ob.roles[j]
        role[late] = LATE
        role[usable] = ANSWERED
        role[ok & ~usable] = excluded[ok & ~usable]
        role[declined] = DECLINED_BASE + part.status[declined]
        ob.held[j] = ok | declined
        if ob.participants[j] in ob.expected:
            ob.waiting -= ob.held[j]
        if ob.held[j].any():
            ob.holding[j] = True
            self._response_offsets[partition].add(offset)
        return "attached"

    def _late_after_result(self, ob: OpenBlock, j: int, answered: Mask) -> int:
        """Answers to rows whose results are out (closed, not replayed), from a participant
        that had not responded to them: counted per row, as today; returns how many."""
        after = ~ob.open & ~ob.replayed & answered & (ob.roles[j] == NONE)
        count = int(after.sum())
        if count:
            ob.roles[j][after] = LATE
            self.late_after_result.append((ob.participants[j], ob.partition, count))
        return count

    def _after_change(self, ob: OpenBlock, now_ms: int) -> None:
        """Queue the block as settled or due (or close it when no row is left open)."""
        if ob.settled_rows().any():
            self._settled[ob.block_id] = None
        deadline = ob.next_deadline()
        if deadline is None:
            self._close_block(ob, now_ms)
        else:
            heapq.heappush(self._deadlines, (deadline, next(self._seq), ob.block_id))

    # -- output -----------------------------------------------------------------------------

    def take_settled(self) -> list[Ready]:
        """Blocks with rows every expected participant has responded to."""
        out = []
        for bid in self._settled:
            ob = self.open.get(bid)
            if ob is not None:
                rows = ob.settled_rows()
                if rows.any():
                    out.append(Ready(ob, rows))
        self._settled.clear()
        return out

    def take_due(self, now_ms: int) -> list[Ready]:
        """Open rows whose deadline has passed (per block, at most one Ready each)."""
        out: dict[str, Ready] = {}
        while self._deadlines and self._deadlines[0][0] <= now_ms:
            _, _, bid = heapq.heappop(self._deadlines)
            ob = self.open.get(bid)
            if ob is None or bid in out or now_ms < ob.deferred_until:
                continue
            rows = ob.open & (ob.block.deadline_ms <= now_ms)
            if rows.any():
                out[bid] = Ready(ob, rows)
        return list(out.values())

    def defer(self, ob: OpenBlock, until_ms: int) -> None:
        """Look at a due block again at `until_ms` (its responses may still be unread)."""
        ob.deferred_until = until_ms
        heapq.heappush(self._deadlines, (until_ms, next(self._seq), ob.block_id))

    def next_deadline_ms(self) -> int | None:
        while self._deadlines and self._deadlines[0][2] not in self.open:
            heapq.heappop(self._deadlines)
        return self._deadlines[0][0] if self._deadlines else None

    def close(self, ob: OpenBlock, rows: Mask, now_ms: int) -> None:
        """The results of `rows` are out: release what only they held."""
        ob.open = ob.open & ~rows
        for j, holding in enumerate(ob.holding):
            if holding and not (ob.held[j] & ob.open).any():
                ob.holding[j] = False
                ref = ob.refs[j]
                assert ref is not None
                self._response_offsets[ref[0]].remove(ref[1])
        self._after_change(ob, now_ms)

    def _close_block(self, ob: OpenBlock, now_ms: int) -> None:
        """No row left open: forget the block's state, remember its id for a while."""
        bid = ob.block_id
        if self.open.pop(bid, None) is None:
            return
        self._settled.pop(bid, None)
        self._query_offsets[ob.partition].remove(ob.offset)
        self._marks[ob.partition].pop(ob.offset, None)
        ob.outputs = [None] * len(ob.outputs)  # only who responded is needed from now on
        self._done[bid] = (now_ms, ob.partition, ob)
        self._done_order.append((now_ms, bid))

    def expire(self, now_ms: int) -> int:
        """Drop remembered blocks and orphan responses older than their TTL; returns the
        number of orphan response blocks dropped."""
        while self._done_order and self._done_order[0][0] <= now_ms - self.done_ttl_ms:
            at, bid = self._done_order.popleft()
            if bid in self._done and self._done[bid][0] == at:
                del self._done[bid]
        orphans = 0
        while self._pending_order and self._pending_order[0][0] <= now_ms - self.pending_ttl_ms:
            _, bid = self._pending_order.popleft()
            for p in self._pending.pop(bid, []):
                self._response_offsets[p.partition].remove(p.offset)
                orphans += 1
        return orphans

    def settle_without_join(self, block_id: str, partition: int, now_ms: int) -> Added:
        """A block answered as a whole without opening it (undecodable: no QueryBlock; a
        decoded block goes through `add_block` with every row `closed`, so that late
        answers to it are counted): "open" means its results are to be emitted now;
        "replayed"/"duplicate" that they were already."""
        if block_id in self._emitted_before[partition]:
            return "replayed"
        if block_id in self.open or block_id in self._done:
            self.duplicates += 1
            return "duplicate"
        self._done[block_id] = (now_ms, partition, None)
        self._done_order.append((now_ms, block_id))
        return "open"

    def mark_emitted(self, partition: int, block_id: str, rows: list[int]) -> None:
        """A result block found in the log: re-reading its query block emits these rows
        no more (a block emitted in parts adds up)."""
        self._emitted_before[partition].setdefault(block_id, []).extend(rows)

    def drop_partition(self, partition: int) -> None:
        """Forget everything of a partition this aggregator no longer owns (a rebalance):
        the new owner rebuilds it from the committed offsets. Closed blocks are forgotten
        too: their results may sit in an aborted transaction (see JoinTable)."""
        for bid in [b for b, ob in self.open.items() if ob.partition == partition]:
            del self.open[bid]
        for bid in [b for b, ps in self._pending.items()
                    if all(p.partition == partition for p in ps)]:
            del self._pending[bid]
        for bid in [b for b, (_, p, _) in self._done.items() if p == partition]:
            del self._done[bid]
        self._query_offsets.pop(partition, None)
        self._response_offsets.pop(partition, None)
        self._marks.pop(partition, None)
        self._settled = {b: None for b in self._settled if b in self.open}
        self._emitted_before.pop(partition, None)

    # -- commit positions -------------------------------------------------------------------

    def oldest_results_mark(self, partition: int) -> int | None:
        oldest = self.oldest_query_offset(partition)
        return None if oldest is None else self._marks[partition].get(oldest)

    def oldest_query_offset(self, partition: int) -> int | None:
        return self._query_offsets[partition].min()

    def oldest_response_offset(self, partition: int) -> int | None:
        return self._response_offsets[partition].min()

