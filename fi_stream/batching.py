"""Micro-batching, done by the broker: a participant's fetch asks for a whole batch.

A batch closes at `max_batch` queries or `max_wait_ms` after it opened. Collecting it in
the client (`getmany` returns as soon as any record is there, so one fetch per record or
two) cost a fetch round trip per record: on a small machine a fifth of a participant's CPU,
and as much again in the broker. Asking the broker instead (`fetch.min.bytes` of a full
batch, `fetch.max.wait.ms` of the wait) gives one fetch per batch, and a batch is what
one `getmany` returns.

Every query record is a query block (a single query is a block of one). The participant
sizes its fetch for `max_batch` blocks of one float32 query, the most bytes a query can
take: larger or |u1 blocks bring more queries per byte, and fill the fetch sooner.
"""

from __future__ import annotations

import math
from typing import Any

from schemas.blocks import ALIGN

#: A query block's prefix and JSON header (ids, task, client, three buffer references),
#: before the data section: ~330 B with 32-character ids, rounded up.
QUERY_HEADER_BYTES = 448
#: How far the estimate may exceed a real record (the header's rounding and slack).
QUERY_OVERHEAD_BYTES = 256
#: With `max_wait_ms = 0` a fetch returns at once when a record is there, and long-polls
#: this long when none is (no busy loop against the broker).
IDLE_FETCH_WAIT_MS = 500


def query_record_bytes(input_shape: tuple[int, ...], rows: int = 1, itemsize: int = 4) -> int:
    """About the size of a query block record of `rows` rows of `input_shape` (float32:
    `itemsize` 4; |u1: 1): the header, then each buffer at the next multiple of ALIGN —
    two <i8 [rows] time buffers and the raw inputs (schemas.blocks.frame)."""
    return (_aligned(QUERY_HEADER_BYTES) + 2 * _aligned(8 * rows)
            + _aligned(itemsize * rows * math.prod(input_shape)))


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def held_fetch(min_bytes: int, wait_ms: int) -> dict[str, Any]:
    """Consumer settings under which the broker holds a fetch until `min_bytes` are there
    or `wait_ms` passed; 0 ms: a fetch returns as soon as anything is there."""
    if wait_ms == 0:
        return {"fetch_min_bytes": 1}
    return {"fetch_min_bytes": min_bytes, "fetch_max_wait_ms": wait_ms}


def fetch_batching(max_batch: int, max_wait_ms: int, record_bytes: int) -> dict[str, Any]:
    """Consumer settings under which the broker answers a fetch with a full batch, or with
    what arrived within `max_wait_ms`."""
    if max_wait_ms == 0:
        return {"fetch_min_bytes": 1, "fetch_max_wait_ms": IDLE_FETCH_WAIT_MS}
    return held_fetch(max_batch * record_bytes, max_wait_ms)
