"""A participant's privacy budget kept in Kafka: it fails closed and several processes
share it.

The local ledger file (fi_stream.ledger) alone fails open: delete it while the participant
is stopped and the spend restarts at zero. So each participant also appends *claims* to
its own single-partition topic ``<prefix>fi.ledger.<participant_id>`` (only that
participant may read or write it, see fi_stream.kafka.acls), and the log decides:

- a claim asks for a block of answers; replaying the topic in offset order, each claim is
  granted ``min(claim, cap − granted so far)`` (`grants`, pure). Every reader computes
  the same grants, so processes that share one budget (one per GPU) need no lock and can
  never together overspend: the partition's order is the arbiter;
- at start the participant raises its local ledger to the total granted in the topic: a
  missing or older ledger file never lowers the spend;
- a granted block counts as spent until it is used or, at a clean stop, released (a
  release record hands back at most what that process was granted): a crash wastes at
  most a block and a half (the next block is claimed
  ahead, when half of the current one is left, so answering never waits for the broker
  in the steady state).

A block is at most 1 % of the budget's answers (`reserve_ahead`), so a claim — one
produce and one read of a tiny record — happens at most a hundred times per budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from fi_stream.kafka.client import make_admin, make_consumer, make_producer
from fi_stream.kafka.topics import replication_for
from fi_stream.ledger import PrivacyLedger
from fi_stream.settings import Settings

log = structlog.get_logger(__name__)


def ledger_topic(settings: Settings, participant_id: str) -> str:
    return f"{settings.kafka.topic_prefix}fi.ledger.{participant_id}"


@dataclass(frozen=True, slots=True)
class Claim:
    process: str
    answers: int
    cap: int  # the claimant's whole budget in answers
    #: A release: a process that stops cleanly hands back the unused part of its grants.
    release: bool = False


def grants(claims: Iterable[Claim], granted: int = 0,
           held: dict[str, int] | None = None) -> list[int]:
    """What each record changes, in log order, after `granted` answers already were: a
    claim is granted what still fits; a release gives back at most what its process was
    granted (a negative change). `held` (process → granted, updated) carries the state
    of a fold across calls."""
    held = {} if held is None else held
    out = []
    for c in claims:
        if c.release:
            g = -max(0, min(c.answers, held.get(c.process, 0)))
        else:
            g = max(0, min(c.answers, c.cap - granted))
        granted += g
        held[c.process] = held.get(c.process, 0) + g
        out.append(g)
    return out


def floor_ledger(ledger: PrivacyLedger, granted: int) -> None:
    """The hook at start: the local ledger counts at least what the topic granted (a
    deleted or older ledger file never lowers the spend)."""
    if granted > ledger.answers:
        log.warning("ledger_raised_from_topic", file_answers=ledger.answers, topic=granted)
        ledger.spend[ledger.mechanism] = granted  # this run's mechanism: what the topic caps
        ledger.reserved = max(ledger.reserved, granted)


class SharedBudget:
    """This process's view of the budget in the ledger topic; `take` is the hook the
    participant calls before reserving answers in its local ledger."""

    def __init__(self, settings: Settings, participant_id: str, *, cap: int,
                 block: int) -> None:
        self.settings = settings
        self.topic = ledger_topic(settings, participant_id)
        self.participant_id = participant_id
        self.cap = cap
        self.block = max(1, block)
        self.process = uuid.uuid4().hex
        #: Answers granted to all processes so far (as far as this one has read).
        self.granted = 0
        #: Granted to this process and not yet used.
        self.left = 0
        self._tp = TopicPartition(self.topic, 0)
        self._mine: dict[int, int] = {}  # offset of my claim → its grant, once read
        self._held: dict[str, int] = {}  # process → answers granted to it (the fold's state)
        self._next = 0  # next offset to read
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()
        self._refill: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Create the topic if needed and read it; returns the total granted so far."""
        await self._ensure_topic()
        self._producer = make_producer(self.settings)
        await self._producer.start()
        self._consumer = make_consumer(self.settings, group_id=None)
        await self._consumer.start()
        self._consumer.assign([self._tp])
        await self._consumer.seek_to_beginning(self._tp)
        end = (await self._consumer.end_offsets([self._tp]))[self._tp]
        await self._read_until(end)
        log.info("shared_budget_opened", topic=self.topic, granted=self.granted, cap=self.cap)
        return self.granted

    async def _ensure_topic(self) -> None:
        admin = make_admin(self.settings)
        await admin.start()
        try:
            if self.topic in await admin.list_topics():
                return
            brokers = len((await admin.describe_cluster())["brokers"])
            k = self.settings.kafka
            replication = replication_for(brokers, k.replication_factor, k.min_insync_replicas)
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(
                    self.topic, 1, replication.factor,
                    topic_configs={"cleanup.policy": "delete", "retention.ms": "-1",
                                   "retention.bytes": "-1",
                                   "min.insync.replicas": str(replication.min_insync)})])
        finally:
            await admin.close()

    async def _read_until(self, end: int) -> None:
        """Fold every claim below offset `end` into the grants."""
        assert self._consumer is not None
        while self._next < end:
            got = await self._consumer.getmany(self._tp, timeout_ms=500)
            for record in got.get(self._tp, []):
                if record.value is None:
                    continue
                raw = orjson.loads(record.value)
                claim = Claim(str(raw["process"]), int(raw["answers"]), int(raw["cap"]),
                              bool(raw.get("release", False)))
                (g,) = grants([claim], self.granted, self._held)
                self.granted += g
                if claim.process == self.process:
                    self._mine[record.offset] = g
                self._next = record.offset + 1

    async def take(self, wanted: int) -> int:
        """How many of `wanted` answers this process may give now; claims a block from
        the log when what it holds is not enough."""
        async with self._lock:
            if wanted > self.left and self.granted < self.cap:
                await self._claim(max(self.block, wanted - self.left))
            allowed = min(wanted, self.left)
            self.left -= allowed
        if self.left < self.block // 2 and self._refill is None and self.granted < self.cap:
            # Claim the next block off the answering path (a round trip to the broker).
            self._refill = asyncio.create_task(self._claim_ahead(), name="ledger-claim")
        return allowed

    def untake(self, answers: int) -> None:
        """Hand back part of what `take` allowed and was not used (repeats answered from
        the reuse cache spend nothing): it stays this process's, for the next `take`."""
        self.left += max(0, answers)

    async def _claim_ahead(self) -> None:
        try:
            async with self._lock:
                if self.left < self.block // 2 and self.granted < self.cap:
                    await self._claim(self.block)
        except Exception as exc:  # the next `take` claims in line, and raises if it must
            log.warning("ledger_claim_ahead_failed", error=str(exc))
        finally:
            self._refill = None

    async def _claim(self, answers: int, release: bool = False) -> None:
        assert self._producer is not None
        value = orjson.dumps({"process": self.process, "answers": answers, "cap": self.cap,
                              "participant_id": self.participant_id, "release": release})
        meta = await self._producer.send_and_wait(self.topic, value, partition=0,
                                                  key=self.participant_id.encode())
        await self._read_until(meta.offset + 1)
        self.left += self._mine.pop(meta.offset, 0)  # negative for a release

    async def stop(self) -> None:
        """After the last answer was acked: hand back the unused block (a crash keeps it
        counted as spent), then close."""
        if self._refill is not None:
            with contextlib.suppress(Exception):
                await self._refill
        if self._producer is not None and self.left > 0:
            try:
                await self._claim(self.left, release=True)
            except Exception as exc:  # it stays counted as spent: safe, only wasteful
                log.warning("ledger_release_failed", left=self.left, error=str(exc))
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
