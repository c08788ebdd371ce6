"""A live view of the compacted fi.registry topic: who participates, with which key and tasks.

With an operator key (`security.operator_pubkey`) only operator-signed entries count
(fi_stream.operator): unsigned or forged entries, replays of older admissions and bare
tombstones are refused and logged, so `participants` and `clients` hold trusted entries
only; a signed removal drops its entry."""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from aiokafka import AIOKafkaConsumer

from fi_stream.kafka.client import make_consumer
from fi_stream.kafka.reading import behind, partitions_of
from fi_stream.operator import ACCEPTED, CLIENT_KEY_PREFIX, Entry, Verdict, judge
from fi_stream.settings import Settings
from schemas import Client, DecodeError, Participant, decode

log = structlog.get_logger(__name__)


class RegistryView:
    """Reads the registry from the start (no consumer group, no commits), then follows it."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topic = settings.topic_names.registry
        self.operator_pubkey = settings.operator_pubkey
        #: Trusted participant entries by id (active or, on an open registry, inactive).
        self.participants: dict[str, Participant] = {}
        #: Trusted, active query clients by id.
        self.clients: dict[str, Client] = {}
        #: Registry records refused, by verdict (what a metric or a test looks at).
        self.refused: dict[Verdict, int] = {}
        #: The newest trusted entry per key, removals included (what replays are judged by).
        self._latest: dict[str, Entry] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def start(self, catch_up_timeout: float = 30.0) -> None:
        """Start following; returns once every record present at start has been read."""
        if self.operator_pubkey is None:
            log.warning("registry_open", topic=self._topic,
                        hint="set FI_SECURITY__OPERATOR_PUBKEY: without it anyone who can "
                             "write the registry is trusted")
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
                self.apply(r.key.decode() if r.key else "", r.value, r.offset)

    def apply(self, key: str, value: bytes | None, offset: int = -1) -> Verdict | None:
        """Judge one registry record and update the view; None if it does not decode."""
        entry: Entry | None = None
        if value is not None:
            cls: type[Entry] = Client if key.startswith(CLIENT_KEY_PREFIX) else Participant
            try:
                entry = decode(value, cls)
            except DecodeError as exc:
                log.warning("registry_bad_record", offset=offset, error=str(exc))
                return None
        verdict = judge(entry, key, self._latest.get(key), self.operator_pubkey)
        if verdict not in ACCEPTED:
            self.refused[verdict] = self.refused.get(verdict, 0) + 1
            log.warning("registry_record_refused", key=key, offset=offset, verdict=verdict)
            return verdict
        self._set(key, entry)
        self._changed.set()
        return verdict

    def _set(self, key: str, entry: Entry | None) -> None:
        if entry is None:  # an open registry's tombstone
            self._latest.pop(key, None)
            self.participants.pop(key, None)
            self.clients.pop(key.removeprefix(CLIENT_KEY_PREFIX), None)
            return
        self._latest[key] = entry
        if isinstance(entry, Client):
            if entry.active:
                self.clients[entry.client_id] = entry
            else:
                self.clients.pop(entry.client_id, None)
        elif entry.active or self.operator_pubkey is None:
            self.participants[entry.participant_id] = entry
        else:  # an operator's removal: its answers are no longer accepted
            self.participants.pop(entry.participant_id, None)

    def latest(self, key: str) -> Entry | None:
        """The newest trusted entry under a registry key, a removal included."""
        return self._latest.get(key)

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
