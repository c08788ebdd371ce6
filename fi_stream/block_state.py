"""Per-block join state (`OpenBlock`) and what `fi_stream.block_join.BlockJoinTable` hands
out (`Ready`): numpy masks over a query block's N rows, one column per participant."""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from schemas.blocks import EXCLUDED_BASE, EXCLUSION_CODES, QueryBlock, ResponseBlock

#: Role codes of `OpenBlock.roles` (as in a result block's `roles`, schemas.blocks):
#: 0 nothing yet, 1 answered (usable so far), 2 late, 10 + k declined, 20 + k excluded.
NONE, ANSWERED, LATE = 0, 1, 2

Mask = npt.NDArray[np.bool_]
Codes = npt.NDArray[np.uint8]


def exclusion_codes(reasons: list[str | None]) -> Codes:
    """`fi_stream.validation.screen_rows`'s per-row reasons as the role codes
    `add_response` takes (0: usable, 20 + k: EXCLUSION_CODES[k])."""
    return np.array([0 if r is None else EXCLUDED_BASE + EXCLUSION_CODES.index(r)
                     for r in reasons], dtype=np.uint8)


class MinTracker:
    """Multiset of offsets with O(log n) min: a heap with lazy deletion."""

    def __init__(self) -> None:
        self._heap: list[int] = []
        self._live: Counter[int] = Counter()

    def add(self, offset: int) -> None:
        if self._live[offset] == 0:
            heapq.heappush(self._heap, offset)
        self._live[offset] += 1

    def remove(self, offset: int) -> None:
        self._live[offset] -= 1
        if self._live[offset] <= 0:
            del self._live[offset]

    def min(self) -> int | None:
        while self._heap and self._heap[0] not in self._live:
            heapq.heappop(self._heap)
        return self._heap[0] if self._heap else None


@dataclass(slots=True, eq=False)
class OpenBlock:
    """One query block being joined. Columns are participants (expected ones sorted,
    then others in the order they responded); rows are the block's queries."""

    block: QueryBlock
    partition: int
    offset: int
    expected: frozenset[str]
    #: Rows whose result an earlier owner already emitted (never emitted again).
    replayed: Mask
    #: Rows not yet closed.
    open: Mask
    participants: list[str] = field(default_factory=list)
    column: dict[str, int] = field(default_factory=dict)
    #: [P, N] role codes (see NONE, ANSWERED, LATE, DECLINED_BASE, EXCLUDED_BASE).
    roles: Codes = field(default_factory=lambda: np.zeros((0, 0), np.uint8))
    #: Per column: the response's [N, C] outputs (its span's rows), and where it lies.
    outputs: list[npt.NDArray[Any] | None] = field(default_factory=list)
    #: [P, N]: each answer's index among its record's answered rows (-1: none), the
    #: `IncludedAnswer.index` of a Result and the `index` buffer of a result block.
    index: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros((0, 0), np.int32))
    refs: list[tuple[int, int] | None] = field(default_factory=list)
    #: [P, N]: rows on which the column's response holds its offset (not late).
    held: Mask = field(default_factory=lambda: np.zeros((0, 0), np.bool_))
    holding: list[bool] = field(default_factory=list)
    #: Per row: expected participants not heard from yet; answer width (-1: none yet).
    waiting: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, np.int32))
    width: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    deferred_until: int = 0

    def __post_init__(self) -> None:
        n = len(self.block)
        self.waiting = np.full(n, len(self.expected), np.int32)
        self.width = np.full(n, -1, np.int64)
        self.participants = sorted(self.expected)  # one allocation, not one per column
        p = len(self.participants)
        self.column = {pid: j for j, pid in enumerate(self.participants)}
        self.roles = np.zeros((p, n), np.uint8)
        self.held = np.zeros((p, n), np.bool_)
        self.index = np.full((p, n), -1, np.int32)
        self.outputs = [None] * p
        self.refs = [None] * p
        self.holding = [False] * p

    @property
    def block_id(self) -> str:
        return self.block.block_id

    def col(self, pid: str) -> int:
        """The column of `pid`, added (empty) when it has none yet."""
        j = self.column.get(pid)
        if j is None:
            j = self.column[pid] = len(self.participants)
            self.participants.append(pid)
            n = len(self.block)
            self.roles = np.vstack([self.roles, np.zeros((1, n), np.uint8)])
            self.held = np.vstack([self.held, np.zeros((1, n), np.bool_)])
            self.index = np.vstack([self.index, np.full((1, n), -1, np.int32)])
            self.outputs.append(None)
            self.refs.append(None)
            self.holding.append(False)
        return j

    def settled_rows(self) -> Mask:
        mask: Mask = self.open & (self.waiting <= 0)
        return mask

    def next_deadline(self) -> int | None:
        if not self.open.any():
            return None
        return int(self.block.deadline_ms[self.open].min())


@dataclass(frozen=True, slots=True, eq=False)
class Part:
    """One span of a response record: a participant's answers to every row of one query
    block (views into the record's buffers, no copy)."""

    participant_id: str
    produced_at_ms: int
    block_id: str
    outputs: npt.NDArray[Any]
    status: Codes
    #: Each row's index among the record's answered rows (-1: declined).
    index: npt.NDArray[np.int32]
    #: 0, or the role code (EXCLUDED_BASE + k) of why an answered row may not be used.
    exclusions: Codes | None

    def __len__(self) -> int:
        return int(self.status.shape[0])


def parts_of(response: ResponseBlock, exclusions: Codes | None = None) -> list[Part]:
    """The record's spans as `Part`s; `exclusions`: per record row, as for add_response."""
    answered = response.status == 0
    index = (np.cumsum(answered, dtype=np.int64) - 1).astype(np.int32)
    index[~answered] = -1
    ex = None if exclusions is None else np.asarray(exclusions, np.uint8)
    return [Part(response.participant_id, response.produced_at_ms, bid,
                 response.outputs[a:b], response.status[a:b], index[a:b],
                 None if ex is None else ex[a:b])
            for bid, a, b in response.span_rows()]


@dataclass(frozen=True, slots=True, eq=False)
class Ready:
    """Rows of an open block to emit now (settled, or due)."""

    block: OpenBlock
    rows: Mask
