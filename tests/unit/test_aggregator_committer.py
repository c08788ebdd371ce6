"""The aggregator's committer and poll loop, without a broker: one transaction at a time,
each carrying exactly what was emitted before it began, the poll loop never waits on one,
and reads each input offset once.

(Delivery itself — exactly-once across SIGKILLs and rebalances — is proven on the real
broker in tests/fault.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from aiokafka import ConsumerRecord, TopicPartition

from consumers.aggregator import AggregatorService
from consumers.aggregator_commit import Out
from fi_stream.clock import now_ms
from fi_stream.kafka.fencing import GroupFenced
from fi_stream.settings import Settings
from schemas import Participant, Privacy
from schemas.blocks import encode_query_block, query_block


@dataclass
class _Meta:
    offset: int


@dataclass
class _Transaction:
    values: list[bytes] = field(default_factory=list)


class FakeProducer:
    """Records transactions; each takes `seconds` to commit, like the broker's round trips."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.committed: list[_Transaction] = []
        self.open = 0
        self.most_open = 0
        self._next_offset = 0
        self._current: _Transaction | None = None

    @asynccontextmanager
    async def transaction(self) -> Any:
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        self._current = _Transaction()
        try:
            yield
            await asyncio.sleep(self.seconds)
            self.committed.append(self._current)
        finally:
            self.open -= 1

    async def send(self, topic: str, value: bytes, **_: Any) -> asyncio.Future[_Meta]:
        assert self._current is not None, "send outside a transaction"
        self._current.values.append(value)
        fut: asyncio.Future[_Meta] = asyncio.get_running_loop().create_future()
        fut.set_result(_Meta(self._next_offset))
        self._next_offset += 1
        return fut

    async def send_offsets_to_transaction(self, offsets: Any, group_id: str) -> None:
        assert self._current is not None


@dataclass
class _Coordinator:
    group_id: str = "fi.aggregator"
    generation: int = 1
    member_id: str = "member-1"


@dataclass
class FakeConsumer:
    """Just the group membership the committer proves with each offset commit."""

    _coordinator: _Coordinator = field(default_factory=_Coordinator)


def _service(producer: FakeProducer) -> AggregatorService:
    """An aggregator that owns partition 0 in generation 1 of its group."""
    service = AggregatorService(Settings())
    service._producer = producer  # type: ignore[assignment]
    service._consumer = FakeConsumer()  # type: ignore[assignment]
    service._tx.positions[TopicPartition(service.topics.queries, 0)] = 0
    service._owned.add(0)
    # One participant serves "digits" (a query nobody serves is settled at once).
    service.registry.participants["p1"] = Participant(
        participant_id="p1", public_key=b"k" * 32, tasks=["digits"], model_version="1",
        privacy=Privacy(clip_norm=1.0, noise_multiplier=0.0), registered_at_ms=0)
    return service


def _results(service: AggregatorService, values: Iterator[bytes]) -> None:
    for value in values:
        service._tx.outbox.append(Out(service.topics.results, 0, b"q", value, []))


async def test_transactions_run_one_at_a_time_with_what_was_emitted_before_each() -> None:
    producer = FakeProducer(seconds=0.05)
    service = _service(producer)
    committer = asyncio.create_task(service._commit_loop())

    _results(service, (b"a", b"b"))
    service._wake.set()
    await asyncio.sleep(0.01)  # the first transaction is in flight
    assert producer.open == 1
    _results(service, (b"c",))  # the poll loop goes on emitting meanwhile
    service._wake.set()
    await asyncio.sleep(0.01)
    _results(service, (b"d",))
    service._wake.set()

    service._closing = True  # as at stop: the last transaction, then the committer returns
    service._wake.set()
    await asyncio.wait_for(committer, 2)

    assert producer.most_open == 1
    assert [t.values for t in producer.committed] == [[b"a", b"b"], [b"c", b"d"]]
    assert service._tx.outbox == []
    assert service._tx.results_next == {0: 4}  # where a restarted owner starts looking


async def test_a_failed_transaction_ends_the_committer() -> None:
    producer = FakeProducer(seconds=0.0)

    async def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("broker gone")

    producer.send = broken  # type: ignore[method-assign,assignment]
    service = _service(producer)
    committer = asyncio.create_task(service._commit_loop())
    _results(service, (b"a",))
    service._wake.set()
    with pytest.raises(RuntimeError, match="broker gone"):
        await asyncio.wait_for(committer, 2)


async def test_a_fenced_member_commits_nothing_more_until_it_rejoins() -> None:
    """The coordinator refused generation 1 (a zombie): the committer lives on, commits
    nothing in that generation, the revocation discards what is held, and after the rejoin
    (generation 2) transactions resume."""
    producer = FakeProducer(seconds=0.0)
    fenced: list[int] = []

    async def refuse(offsets: Any, group_id: str) -> None:
        fenced.append(1)
        raise GroupFenced("generation 1 is stale")

    producer.send_offsets_to_transaction = refuse  # type: ignore[method-assign,assignment]
    service = _service(producer)
    committer = asyncio.create_task(service._commit_loop())
    _results(service, (b"a",))
    service._wake.set()
    await asyncio.sleep(0.01)
    assert fenced == [1] and producer.committed == [] and not committer.done()

    _results(service, (b"b",))  # the poll loop has not noticed yet
    service._wake.set()
    await asyncio.sleep(0.01)
    assert fenced == [1], "no second transaction in the refused generation"

    await service.on_revoked({TopicPartition(service.topics.queries, 0)})
    assert service._tx.outbox == [] and service._owned == set()

    del producer.send_offsets_to_transaction  # the coordinator accepts generation 2
    assert service._consumer is not None
    service._consumer._coordinator.generation = 2
    service._tx.positions[TopicPartition(service.topics.queries, 0)] = 0  # as on_assigned does
    service._owned.add(0)
    _results(service, (b"c",))
    service._closing = True
    service._wake.set()
    await asyncio.wait_for(committer, 2)
    assert [t.values for t in producer.committed] == [[b"c"]]


class ReplayingConsumer(FakeConsumer):
    """getmany answers from a script, as aiokafka does around on_assigned's seek: what it
    fetched from its own start before the seek, then the same records again after it."""

    def __init__(self, script: list[dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]],
                 done: asyncio.Event) -> None:
        super().__init__()
        self._script = script
        self._done = done

    async def getmany(self, **_: Any) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        if not self._script:
            self._done.set()
            await asyncio.sleep(0.01)
            return {}
        return self._script.pop(0)


async def test_records_fetched_again_after_the_resume_seek_are_read_once() -> None:
    service = _service(FakeProducer(seconds=0.0))
    tp = TopicPartition(service.topics.queries, 0)
    now = now_ms()
    records = [
        ConsumerRecord(tp.topic, 0, offset, now, 0, block_id.encode(), encode_query_block(
            query_block(block_id, "digits", np.zeros((1, 4), np.float32), created_at_ms=now,
                        deadline_ms=now + 60_000)), None, 0, 0, [])
        for offset, block_id in enumerate(("b0", "b1"))]
    service._consumer = ReplayingConsumer(  # type: ignore[assignment]
        [{tp: records}, {tp: records}, {tp: records[1:]}], service._stopping)
    await asyncio.wait_for(service._poll_loop(asyncio.get_running_loop().create_future()), 2)

    assert service.join.duplicates == 0
    assert sorted(service.join.open) == ["b0.0", "b1.0"]
    assert service._tx.positions[tp] == 2
