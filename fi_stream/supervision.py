"""Carrying on when Kafka is away: a service that cannot start because the cluster is
unreachable, or that stops because the cluster went away or refused a member that
stalled, is built afresh and started again after a backoff, instead of exiting.

A fresh service is exactly what a process restart would give (it resumes from the log:
participants from their committed offsets, the aggregator from its transactional resume
state), without the supervisor's restart delay and without a traceback per attempt.
Bounds: the delay doubles from `initial_s` to at most `max_s` (with jitter); after
`give_up_s` of continuous outage the service gives up and exits 1, which hands it to the
process supervisor (systemd `Restart=on-failure`, compose `restart:`). Each distinct cause
is logged once per outage, and the recovery once, with how long it took.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from fi_stream.kafka.transient import cause_of, is_transient
from fi_stream.service import Service

log = structlog.get_logger(__name__)


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """How long to wait before attempt n+1, and when to give up.

    `healthy_s`: a run at least this long ends the outage, so the next failure starts
    again from `initial_s` with a fresh give-up clock.
    """

    initial_s: float = 0.5
    max_s: float = 30.0
    factor: float = 2.0
    give_up_s: float = 900.0  # 0: never give up
    healthy_s: float = 60.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The wait after the `attempt`-th failure (0-based): exponential up to `max_s`,
        jittered into [½, 1] of that so restarted services do not retry in lockstep."""
        ceiling = min(self.max_s, self.initial_s * self.factor ** min(attempt, 64))
        return ceiling * (0.5 + 0.5 * rng.random())


async def _start(service: Service) -> BaseException | None:
    """Start `service`. A transient failure (the cluster is unreachable) is returned, any
    other (a missing model, a bad setting) raised; either way what it opened is closed."""
    try:
        await service.start()
    except BaseException as exc:
        await service.stop()
        if isinstance(exc, Exception) and is_transient(exc):
            return exc
        raise
    return None


async def _ready(ready: Callable[[], Awaitable[None]] | None) -> BaseException | None:
    """Run the readiness check; a transient failure is returned, any other raised."""
    if ready is None:
        return None
    try:
        await ready()
    except Exception as exc:
        if is_transient(exc):
            return exc
        raise
    return None


async def _run(service: Service, stop: asyncio.Event) -> BaseException | None:
    """Run a started `service` until it fails or `stop` is set; stopped in both cases.
    Returns why it stopped by itself (None after a requested stop)."""
    stopping = asyncio.create_task(stop.wait())
    failing = asyncio.create_task(service.wait())
    try:
        await asyncio.wait({stopping, failing}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (stopping, failing):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await service.stop()
    return service.failure


async def run_until(service: Service, stop: asyncio.Event,
                    on_started: Callable[[Service], None] | None = None
                    ) -> BaseException | None:
    """Start and run one `service`, no retries: its failure, or None after `stop`."""
    failure = await _start(service)
    if failure is not None:
        return failure
    if on_started is not None:
        on_started(service)
    return await _run(service, stop)


async def supervise(make: Callable[[], Service], stop: asyncio.Event, backoff: Backoff,
                    *, rng: random.Random | None = None,
                    on_started: Callable[[Service], None] | None = None,
                    ready: Callable[[], Awaitable[None]] | None = None,
                    clock: Callable[[], float] = time.monotonic) -> BaseException | None:
    """Run services made by `make` until `stop` is set; after a transient failure (see
    `is_transient`) make a fresh one after a backoff. Returns None after a requested stop,
    else the failure that ended it: one that is not transient, or a transient one whose
    outage lasted `backoff.give_up_s`. `ready`, if given, runs before each attempt (a
    bounded broker probe): while it fails transiently no service is even built."""
    rng = rng or random.Random()
    attempt = 0
    outage_since: float | None = None
    logged: set[str] = set()
    while not stop.is_set():
        service = make()  # cheap: a service acquires its resources in start()
        name = service.name
        began = clock()
        failure = await _ready(ready)
        if failure is None:
            failure = await _start(service)
        if failure is None:
            if outage_since is not None:
                log.warning("kafka_available_again", service=name,
                            attempts=attempt, down_s=round(clock() - outage_since, 1))
            if on_started is not None:
                on_started(service)
            failure = await _run(service, stop)
            if failure is None:
                return None
            if clock() - began >= backoff.healthy_s:  # it worked for a while: a new outage
                attempt, outage_since, logged = 0, None, set()
        if not is_transient(failure):
            return failure
        if outage_since is None:
            outage_since = clock()
        down = clock() - outage_since
        cause = cause_of(failure)
        if backoff.give_up_s and down >= backoff.give_up_s:
            log.error("kafka_unavailable_giving_up", service=name, cause=cause,
                      attempts=attempt + 1, down_s=round(down, 1))
            return failure
        wait = backoff.delay(attempt, rng)
        if cause not in logged:
            logged.add(cause)
            log.warning("kafka_unavailable", service=name, cause=cause,
                        retry_in_s=round(wait, 2), max_backoff_s=backoff.max_s,
                        give_up_after_s=backoff.give_up_s or None)
        attempt += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait)
    return None
