"""The aggregator's Kafka transactions: everything it emitted plus its input offsets,
committed together, never past a record an open query still needs.

Every owned queries partition is committed in every transaction, with metadata that lets
the next owner resume exactly: where in fi.results to look for results it must not emit
again, the running incentive window and the stateful strategies' history.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog
from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    TopicPartition,
)
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from consumers.aggregator_blocks import emitted_query_ids
from fi_stream.join import JoinTable
from fi_stream.kafka import make_consumer
from fi_stream.kafka.dlq import dead_letter_headers, key_text
from fi_stream.kafka.fencing import GroupFenced, GroupMembership, membership, send_offsets_fenced
from fi_stream.kafka.reading import read_range
from fi_stream.settings import Settings, TopicNames
from schemas import Event, encode, headers

log = structlog.get_logger(__name__)

#: How long input offsets may wait for a transaction when there is nothing to emit.
OFFSETS_ONLY_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class Out:
    topic: str
    partition: int | None
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


class Transactions:
    """The outbox, the read positions and what is committed, per input partition."""

    def __init__(self, topics: TopicNames, join: JoinTable, owned: set[int],
                 resume_state: Callable[[int], str]) -> None:
        self.topics = topics
        self.join = join
        self.owned = owned
        self.resume_state = resume_state
        self.outbox: list[Out] = []
        self.positions: dict[TopicPartition, int] = {}
        self.committed: dict[TopicPartition, int] = {}
        #: Next fi.results offset after everything this member emitted, per partition.
        self.results_next: dict[int, int] = {}
        self.inflight: asyncio.Task[None] | None = None
        #: The group generation whose transaction the coordinator refused (see on_revoked).
        self.fenced_generation: int | None = None
        self._last_commit = 0.0

    def send(self, topic: str, partition: int | None, key: str, event: Event) -> None:
        self.outbox.append(Out(topic, partition, key.encode(), encode(event),
                               headers(type(event))))

    def forget(self, tps: set[TopicPartition]) -> None:
        for tp in tps:
            self.positions.pop(tp, None)
            self.committed.pop(tp, None)

    def offsets(self) -> dict[TopicPartition, OffsetAndMetadata]:
        """Input offsets to commit, never past a record an open query still needs."""
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for tp, position in self.positions.items():
            if tp.partition not in self.owned:
                continue  # not (yet) resumed: its committed resume state stays as it is
            if tp.topic == self.topics.queries:
                oldest = self.join.oldest_query_offset(tp.partition)
            else:
                oldest = self.join.oldest_response_offset(tp.partition)
            target = position if oldest is None else min(oldest, position)
            if tp.topic == self.topics.queries:
                offsets[tp] = OffsetAndMetadata(target, self.resume_state(tp.partition))
            elif self.committed.get(tp) != target:
                offsets[tp] = OffsetAndMetadata(target, "")
        return offsets

    def begin(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, *,
              force: bool = False) -> asyncio.Task[None] | None:
        """Start one transaction: everything emitted so far plus the input offsets, as of
        now (the caller holds the lock and no transaction is in flight).

        With nothing to emit, offsets alone wait up to `OFFSETS_ONLY_INTERVAL_S`: a
        transaction costs round trips, and a later commit only means a restart re-reads a
        little more (what it re-reads is deduplicated against fi.results).

        Nothing is committed while this member is not one (it lost its partitions; the
        rebalance that follows discards what it holds), nor in a generation the coordinator
        already refused.
        """
        assert self.inflight is None or self.inflight.done()
        member = membership(consumer)
        if member is None or member.generation_id == self.fenced_generation:
            return None
        if not self.outbox and not force and (
                time.monotonic() - self._last_commit < OFFSETS_ONLY_INTERVAL_S
                or all(self.committed.get(tp) == pos for tp, pos in self.positions.items())):
            return None
        self._last_commit = time.monotonic()
        offsets = self.offsets()
        if not offsets and not self.outbox:
            return None
        # Every owned queries partition is in `offsets`, so whatever is emitted travels with
        # an offset commit: the coordinator's generation check covers all of it.
        assert offsets or not self.outbox
        outbox, self.outbox = self.outbox, []
        self.inflight = asyncio.create_task(self._transact(producer, outbox, offsets, member))
        return self.inflight

    async def _transact(self, producer: AIOKafkaProducer, outbox: list[Out],
                        offsets: dict[TopicPartition, OffsetAndMetadata],
                        member: GroupMembership) -> None:
        futures = []
        try:
            async with producer.transaction():
                for out in outbox:
                    futures.append(await producer.send(
                        out.topic, out.value, key=out.key, partition=out.partition,
                        headers=out.headers))
                if offsets:
                    await send_offsets_fenced(producer, offsets, member)
        except GroupFenced as exc:
            # A zombie: the group gave our partitions away while we were stalled. The
            # transaction is aborted; the rebalance that follows discards the rest.
            self.fenced_generation = member.generation_id
            log.warning("aggregator_fenced", generation=member.generation_id,
                        aborted=len(outbox), detail=str(exc))
            return
        for out, fut in zip(outbox, futures, strict=True):
            if out.topic == self.topics.results and out.partition is not None:
                meta = fut.result()
                self.results_next[out.partition] = max(
                    self.results_next.get(out.partition, 0), meta.offset + 1)
        self.committed.update({tp: om.offset for tp, om in offsets.items()})

    async def commit_now(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> None:
        """Under the lock: let the transaction in flight finish, then commit the rest."""
        if self.inflight is not None:
            await self.inflight
        transaction = self.begin(consumer, producer, force=True)
        if transaction is not None:
            await transaction


def dead_letter(record: ConsumerRecord[bytes, bytes], reason: str, detail: str,
                topics: TopicNames, group_id: str) -> Out:
    """The DLQ copy of a record the aggregator cannot use (logged)."""
    # Query blocks are keyed by their id; responses by their participant's.
    about = ({"block_id": key_text(record)} if record.topic == topics.queries
             else {"participant_id": key_text(record)})
    log.warning("dead_letter", reason=reason, detail=detail, topic=record.topic,
                partition=record.partition, offset=record.offset, **about)
    return Out(topics.dlq, None, record.key or b"", record.value or b"",
               dead_letter_headers(record, reason, detail, group_id))


async def emitted_since(settings: Settings, results_topic: str, partition: int,
                        start: int) -> tuple[set[str], int]:
    """The query ids of the result blocks on `partition` of fi.results from `start`, and
    the end offset: what a resumed owner must not emit again, and where its results go."""
    reader = make_consumer(settings, group_id=None)
    await reader.start()
    try:
        records, end = await read_range(reader, TopicPartition(results_topic, partition),
                                        start=start)
    finally:
        await reader.stop()
    return emitted_query_ids(r.value for r in records), end


class Member(Protocol):
    async def on_revoked(self, revoked: set[TopicPartition]) -> None: ...

    async def on_assigned(self, assigned: set[TopicPartition]) -> None: ...

    def fail(self, exc: BaseException) -> None: ...


class FailingRebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """aiokafka logs a listener's error and carries on: with partitions assigned but not
    resumed, or revoked but not committed, the aggregator would silently skip or redo work.
    Such an error stops it instead (exit 1; a restart resumes from the log)."""

    def __init__(self, member: Member) -> None:
        self._member = member

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        try:
            await self._member.on_revoked(revoked)
        except Exception as exc:
            self._member.fail(exc)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        try:
            await self._member.on_assigned(assigned)
        except Exception as exc:
            self._member.fail(exc)
