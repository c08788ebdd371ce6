"""The load generator of `fi-stream bench e2e`: offer queries at a rate (open loop) or as fast
as a cap on unanswered queries allows (closed loop), and measure what comes back.

    stats = await drive(settings, rate=700, duration=10, warmup=5, deadline_ms=5_000,
                        max_in_flight=1_000, block=1)

Queries go out in query blocks of `block` rows (`QueryClient.submit_block`): the rate and the
in-flight cap count queries, not blocks. Latency is query created → result received by this
client; `join_ms` splits off the part until the aggregator completed the result. Only
queries sent after the warm-up count.

Its own CPU (the client stubbed out): ~20-25 µs per query at blocks of one, ~15 at blocks
of 16 (main's per-query loop: ~30-40), i.e. tens of thousands of queries/s per core, far
above what the pipeline sustains on one machine: it is not the bottleneck of `bench e2e`.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fi_stream.clock import now_ms
from fi_stream.models import load_digits_split
from fi_stream.settings import Settings
from producers.query_client import QueryClient
from schemas import Result

#: The open-loop load generator wakes at most this often (about 3 queries per wake at 1,400/s).
PACING_TICK_S = 0.002


@dataclass
class _Tally:
    """What the measured queries' results said (queries of the warm-up are not counted)."""

    latencies: list[float] = field(default_factory=list)
    joins: list[float] = field(default_factory=list)  # query created -> result completed
    created_at: list[int] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    missed: int = 0
    on_time: int = 0
    lost: int = 0  # no result at all (the client's grace after the deadline ran out)

    def add(self, result: Result, created: int) -> None:
        self.latencies.append(now_ms() - created)
        self.joins.append(result.completed_at_ms - created)
        self.created_at.append(created)
        self.statuses[result.status] = self.statuses.get(result.status, 0) + 1
        late = result.status != "complete" or result.completed_at_ms > result.deadline_ms
        self.missed += late
        self.on_time += not late


async def drive(settings: Settings, *, rate: float, duration: float, warmup: float,
                deadline_ms: int, max_in_flight: int, block: int = 1,
                on_live: Callable[[], None] | None = None) -> dict[str, Any]:
    """Offer `rate` queries/s (0: as fast as `max_in_flight` allows) in blocks of `block`
    for `warmup` + `duration` seconds; only queries sent after the warm-up count. `on_live`
    runs once the pipeline answered its first query, before the load starts (the CLI
    settles its heap there)."""
    if not 1 <= block <= max_in_flight:
        raise ValueError(f"need 1 <= block <= max_in_flight; got {block}, {max_in_flight}")
    xs = load_digits_split().x_test
    tally = _Tally()
    async with QueryClient(settings, client_id="bench", quorum=1) as client:
        await client.infer(xs[0], deadline_ms=30_000)  # the pipeline is live
        if on_live is not None:
            on_live()
        slots = asyncio.Semaphore(max_in_flight)
        waiting: set[asyncio.Future[Result]] = set()

        def settled(fut: asyncio.Future[Result], created: int, measured: bool) -> None:
            slots.release()
            waiting.discard(fut)
            if not measured or fut.cancelled():
                return
            if fut.exception() is None:
                tally.add(fut.result(), created)
            else:  # ResultTimeoutError: no result within the client's grace
                tally.lost += 1

        started = time.perf_counter()
        sent = measured_sent = 0
        while (elapsed := time.perf_counter() - started) < warmup + duration:
            if rate > 0 and sent >= rate * elapsed:
                # Whatever fell due meanwhile goes out in one burst: a wake-up per block
                # would cost the load generator more than the queries themselves. (A block
                # goes out when its first query is due: the rate holds on average.)
                await asyncio.sleep(max(PACING_TICK_S, (sent + 1) / rate - elapsed))
                continue
            for _ in range(block):
                await slots.acquire()
            measured = elapsed >= warmup
            query_block, futures = await client.submit_block(_rows(xs, sent, block),
                                                             deadline_ms=deadline_ms)
            created = int(query_block.created_at_ms[0])
            for fut in futures:
                waiting.add(fut)
                fut.add_done_callback(functools.partial(settled, created=created,
                                                        measured=measured))
            sent += block
            measured_sent += block * measured
        if waiting:
            await asyncio.wait(waiting)
        wall = time.perf_counter() - started - warmup
    return _summary(tally, rate=rate, max_in_flight=max_in_flight, warmup=warmup,
                    sent=measured_sent, wall=wall, block=block)


def _rows(xs: np.ndarray[Any, Any], first: int, block: int) -> np.ndarray[Any, Any]:
    """Inputs first, first + 1, … (cycling through `xs`): a slice (a view) unless the block
    wraps around, not a fancy index per block."""
    start = first % len(xs)
    if start + block <= len(xs):
        return xs[start:start + block]
    return xs[np.arange(start, start + block) % len(xs)]


def _summary(tally: _Tally, *, rate: float, max_in_flight: int, warmup: float, sent: int,
             wall: float, block: int) -> dict[str, Any]:
    lat = np.asarray(tally.latencies, dtype=np.float64)
    joins = np.asarray(tally.joins, dtype=np.float64)
    return {
        "offered_rate": rate or None, "max_in_flight": max_in_flight, "block": block,
        "warmup_s": warmup, "sent": sent, "results": len(lat),
        # Goodput: complete results within their deadline, per second.
        "queries_per_s": tally.on_time / wall,
        "results_per_s": len(lat) / wall,
        "latency_ms": {"mean": float(lat.mean()), **percentiles(lat)},
        # Where it goes: until the aggregator completes the result (participants + join),
        # and from there until the client reads it (transaction commit + fetch).
        "join_ms": percentiles(joins),
        "delivery_ms": percentiles(lat - joins),
        "deadline_miss_rate": tally.missed / max(1, len(lat)), "statuses": tally.statuses,
        "lost": tally.lost,
        "per_second": per_second(np.asarray(tally.created_at), lat),
    }


def percentiles(values: np.ndarray[Any, Any]) -> dict[str, float]:
    return {"p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99))}


def per_second(created_ms: np.ndarray[Any, Any], latency_ms: np.ndarray[Any, Any]
               ) -> list[dict[str, float]]:
    """Latency by the second the query was created in: a tail made of a few slow seconds
    (a stall) reads differently from one spread over the whole run (queueing)."""
    if not len(created_ms):
        return []
    second = (created_ms - created_ms.min()) // 1000
    return [{"second": int(s), "queries": int((second == s).sum()),
             **percentiles(latency_ms[second == s])} for s in np.unique(second)]
