"""Micro-batching: collect records until `max_batch` or `max_wait_ms` after the first one.

aiokafka's `getmany` returns as soon as any data is there; it is not a batcher. This
keeps asking until the batch is full or the first record has waited long enough.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

#: fetch(timeout_ms, max_records) -> records; an empty list when nothing came in time.
Fetch = Callable[[int, int], Awaitable[Sequence[T]]]


@dataclass(kw_only=True)
class MicroBatcher(Generic[T]):
    fetch: Fetch[T]
    max_batch: int
    max_wait_ms: int
    idle_poll_ms: int = 100
    clock: Callable[[], float] = time.monotonic

    async def next_batch(self) -> list[T]:
        """One batch, or an empty list after `idle_poll_ms` without any record."""
        batch: list[T] = list(await self.fetch(self.idle_poll_ms, self.max_batch))
        if not batch:
            return batch
        deadline = self.clock() + self.max_wait_ms / 1000
        while len(batch) < self.max_batch:
            remaining_ms = int((deadline - self.clock()) * 1000)
            if remaining_ms <= 0:
                break
            batch.extend(await self.fetch(remaining_ms, self.max_batch - len(batch)))
        return batch
