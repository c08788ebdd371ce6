"""A live view of the compacted fi.registry topic: who participates, with which key and tasks."""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from aiokafka import AIOKafkaConsumer

from fi_stream.kafka.client import make_consumer
from fi_stream.kafka.reading import behind, partitions_of
from fi_stream.settings import Settings
from schemas import DecodeError, Participant, decode

log = structlog.get_logger(__name__)


class RegistryView:
    """Reads the registry from the start (no consumer group, no commits), then follows it."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topic = settings.topic_names.registry
        self.participants: dict[str, Participant] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def start(self, catch_up_timeout: float = 30.0) -> None:
        """Start following; returns once every record present at start has been read."""
        self._consumer = make_consumer(self._settings, group_id=None)
        await self._consumer.start()
        try:
            tps = await partitions_of(self._consumer, self._topic)
            self._consumer.assign(tps)
            await self._consumer.seek_to_beginning(*tps)
            end = await self._consumer.end_offsets(tps)
            async with asyncio.timeout(catch_up_timeout):
                while await behind(self._consumer, end):
                    await self._poll(200)
        except BaseException:
            await self.stop()
            raise
        self._task = asyncio.create_task(self._follow(), name="registry-follow")

    async def _poll(self, timeout_ms: int) -> None:
        assert self._consumer is not None
        got = await self._consumer.getmany(timeout_ms=timeout_ms)
        for records in got.values():
            for r in records:
                pid = r.key.decode() if r.key else ""
                if r.value is None:
                    self.participants.pop(pid, None)
                    continue
                try:
                    entry = decode(r.value, Participant)
                except DecodeError as exc:
                    log.warning("registry_bad_record", offset=r.offset, error=str(exc))
                    continue
                self.participants[entry.participant_id] = entry
                self._changed.set()

    async def _follow(self) -> None:
        while True:
            await self._poll(500)

    async def wait_for(self, participant_ids: set[str], timeout: float) -> None:
        """Block until all ids are registered (used by tests and the demo)."""
        async with asyncio.timeout(timeout):
            while not participant_ids <= self.participants.keys():
                self._changed.clear()
                await self._changed.wait()

    def serving(self, task: str) -> frozenset[str]:
        return frozenset(p.participant_id for p in self.participants.values()
                         if p.active and task in p.tasks)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
