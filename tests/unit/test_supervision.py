"""Riding out Kafka outages: bounded backoff, a fresh service per attempt, each cause
logged once, giving up after a bounded outage; other failures are not retried."""

from __future__ import annotations

import asyncio
import random

import pytest
from aiokafka.errors import CommitFailedError, KafkaConnectionError, KafkaTimeoutError
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from fi_stream.errors import ModelNotFoundError
from fi_stream.kafka.transient import cause_of, is_transient
from fi_stream.service import Service
from fi_stream.supervision import Backoff, supervise

FAST = Backoff(initial_s=0.001, max_s=0.004, give_up_s=0, healthy_s=60)


@given(attempt=st.integers(0, 10_000), seed=st.integers(0, 2**32))
def test_every_delay_is_bounded_and_jittered_below_its_ceiling(attempt: int, seed: int) -> None:
    b = Backoff(initial_s=0.5, max_s=30.0)
    ceiling = min(30.0, 0.5 * 2.0 ** min(attempt, 64))
    d = b.delay(attempt, random.Random(seed))
    assert ceiling / 2 <= d <= ceiling <= 30.0


def test_the_ceiling_doubles_until_the_maximum() -> None:
    b = Backoff(initial_s=0.5, max_s=30.0)

    class Top(random.Random):
        def random(self) -> float:
            return 1.0

    assert [b.delay(n, Top()) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]


@pytest.mark.parametrize("exc", [KafkaConnectionError("Unable to bootstrap from x"),
                                 KafkaTimeoutError(), CommitFailedError(), TimeoutError()])
def test_kafka_outages_and_lost_membership_are_transient(exc: Exception) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize("exc", [ValueError("bad"), ModelNotFoundError("no model")])
def test_bugs_and_setup_errors_are_not(exc: Exception) -> None:
    assert not is_transient(exc)


class _Flaky(Service):
    """Fails to start `failures[0]` times (shared list), then runs until stopped or fails
    with `then`."""

    name = "flaky"

    def __init__(self, log: list[str], start_error: Exception | None,
                 run_error: Exception | None = None) -> None:
        super().__init__()
        self.log, self.start_error, self.run_error = log, start_error, run_error

    async def _open(self) -> None:
        self.log.append("open")
        if self.start_error is not None:
            raise self.start_error

    async def _run(self) -> None:
        self.log.append("run")
        if self.run_error is not None:
            raise self.run_error
        await self._stopping.wait()

    async def _close(self) -> None:
        self.log.append("close")


async def test_a_service_that_cannot_reach_kafka_is_started_afresh_until_it_can() -> None:
    log: list[str] = []
    made: list[_Flaky] = []
    stop = asyncio.Event()

    def make() -> Service:
        fails = len(made) < 5
        s = _Flaky(log, KafkaConnectionError("Unable to bootstrap from [127.0.0.1:1]")
                   if fails else None)
        made.append(s)
        if not fails:
            asyncio.get_running_loop().call_later(0.05, stop.set)
        return s

    with capture_logs() as logs:
        assert await asyncio.wait_for(supervise(make, stop, FAST), 5) is None
    assert len(made) == 6 and len({id(s) for s in made}) == 6  # a fresh service each time
    assert log.count("close") == 6  # what a failed start opened is closed
    events = [e["event"] for e in logs]
    assert events.count("kafka_unavailable") == 1  # once per cause, not per attempt
    assert events.count("kafka_available_again") == 1


async def test_an_outage_longer_than_give_up_ends_with_its_failure() -> None:
    ticks = iter(range(0, 10_000, 7))
    backoff = Backoff(initial_s=0.001, max_s=0.002, give_up_s=60, healthy_s=60)
    err = KafkaConnectionError("Unable to bootstrap")
    with capture_logs() as logs:
        failure = await asyncio.wait_for(
            supervise(lambda: _Flaky([], err), asyncio.Event(), backoff,
                      clock=lambda: float(next(ticks))), 5)
    assert failure is err
    assert [e["event"] for e in logs][-1] == "kafka_unavailable_giving_up"


async def test_a_service_whose_cluster_went_away_is_restarted_and_carries_on() -> None:
    made: list[_Flaky] = []
    stop = asyncio.Event()

    def make() -> Service:
        first = not made
        s = _Flaky([], None, KafkaTimeoutError() if first else None)
        made.append(s)
        if not first:
            asyncio.get_running_loop().call_later(0.05, stop.set)
        return s

    assert await asyncio.wait_for(supervise(make, stop, FAST), 5) is None
    assert len(made) == 2


async def test_a_bug_is_not_retried() -> None:
    made: list[_Flaky] = []

    def make() -> Service:
        made.append(_Flaky([], None, ValueError("a bug")))
        return made[-1]

    failure = await asyncio.wait_for(supervise(make, asyncio.Event(), FAST), 5)
    assert isinstance(failure, ValueError) and len(made) == 1


async def test_a_setup_error_at_start_is_raised_not_retried() -> None:
    with pytest.raises(ModelNotFoundError):
        await asyncio.wait_for(supervise(lambda: _Flaky([], ModelNotFoundError("x")),
                                         asyncio.Event(), FAST), 5)


def test_the_cause_is_the_type_and_first_line() -> None:
    assert cause_of(KafkaConnectionError("a\nb")) == "KafkaConnectionError: a"
    assert cause_of(KafkaTimeoutError()) == "KafkaTimeoutError"
