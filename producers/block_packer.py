"""QueryBlockPacker: queries arriving one by one → query blocks, by size and linger.

Pure: no clock, no I/O. The caller (QueryClient.stream()) offers each query with the
current time, asks `due(now)` when its linger timer fires, and encodes what comes out. A
block closes when it holds `max_block` queries, when the oldest query in it has waited
`linger_ms`, or when a query of another task/client/quorum/strategy/input kind arrives (a
block has one of each). Query ids are not chosen here: row n of block B is query
`B.n` (schemas.blocks.query_id), known once the block is closed (`QueryBlock.query_ids`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schemas.blocks import MAX_BLOCK, QueryBlock, query_block


@dataclass(frozen=True, slots=True)
class PendingQuery:
    task: str
    input: np.ndarray[Any, Any]
    created_at_ms: int
    deadline_ms: int
    quorum: int = 1
    strategy: str | None = None
    client_id: str = "anonymous"
    input_scale: float | None = None


@dataclass
class QueryBlockPacker:
    max_block: int = 256
    linger_ms: int = 5
    _pending: list[PendingQuery] = field(default_factory=list)
    _opened_ms: int = 0
    _seq: int = 0
    block_prefix: str = "blk"

    def __post_init__(self) -> None:
        if not 1 <= self.max_block <= MAX_BLOCK or self.linger_ms < 0:
            raise ValueError(f"need 1 <= max_block <= {MAX_BLOCK} and linger_ms >= 0; got"
                             f" {self.max_block}, {self.linger_ms}")

    def offer(self, query: PendingQuery, now_ms: int) -> list[QueryBlock]:
        """Add one query; the blocks this closes (0, 1 or 2), oldest first."""
        out: list[QueryBlock] = []
        if self._pending and not _same_kind(self._pending[0], query):
            out.append(self._close())
        if not self._pending:
            self._opened_ms = now_ms
        self._pending.append(query)
        if len(self._pending) >= self.max_block:
            out.append(self._close())
        return out

    def due(self, now_ms: int) -> list[QueryBlock]:
        """The open block if its oldest query has lingered long enough."""
        if self._pending and now_ms - self._opened_ms >= self.linger_ms:
            return [self._close()]
        return []

    def next_due_ms(self) -> int | None:
        """When `due` will next close a block (None: nothing pending)."""
        return self._opened_ms + self.linger_ms if self._pending else None

    def flush(self) -> list[QueryBlock]:
        """Close the open block whatever its age (shutdown, an explicit flush)."""
        return [self._close()] if self._pending else []

    def __len__(self) -> int:
        return len(self._pending)

    def _close(self) -> QueryBlock:
        items, self._pending = self._pending, []
        self._seq += 1
        first = items[0]
        return query_block(
            f"{self.block_prefix}-{self._seq}", first.task, np.stack([q.input for q in items]),
            created_at_ms=np.array([q.created_at_ms for q in items], dtype=np.int64),
            deadline_ms=np.array([q.deadline_ms for q in items], dtype=np.int64),
            input_scale=first.input_scale, quorum=first.quorum, strategy=first.strategy,
            client_id=first.client_id)


def _same_kind(a: PendingQuery, b: PendingQuery) -> bool:
    return (a.task, a.quorum, a.strategy, a.client_id, a.input_scale, a.input.dtype,
            a.input.shape) == (b.task, b.quorum, b.strategy, b.client_id, b.input_scale,
                               b.input.dtype, b.input.shape)
