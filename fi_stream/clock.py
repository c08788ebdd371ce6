"""Clocks and deadlines, injectable so tests can control time."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


def now_ms() -> int:
    """Wall-clock epoch milliseconds: deadlines are absolute and cross machines."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Deadline:
    """A point on the monotonic clock; `remaining()` never goes below zero."""

    at: float
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def from_timeout(cls, seconds: float, clock: Callable[[], float] = time.monotonic) -> Deadline:
        return cls(clock() + seconds, clock)

    def remaining(self) -> float:
        return max(0.0, self.at - self.clock())

    def expired(self) -> bool:
        return self.clock() >= self.at
