"""Wall-clock time: deadlines are absolute epoch milliseconds that cross machines."""

from __future__ import annotations

import time


def now_ms() -> int:
    """Wall-clock epoch milliseconds: deadlines are absolute and cross machines."""
    return time.time_ns() // 1_000_000
