"""The copycat: a strategic participant for experiments and tests only.

It answers nothing itself. It reads fi.responses (which the secured cluster's ACLs should
deny a participant; see the README's security section) and re-sends each answer another
participant gave, under its own key, to the same partition, at once — well within the
deadline. The rows are bit-for-bit the originals: the aggregator's copy detection
(fi_stream.copycat) must flag every one of them.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from aiokafka.structs import ConsumerRecord

from consumers.participant import IDLE_POLL_MS, ParticipantService
from fi_stream.clock import now_ms
from fi_stream.kafka import make_consumer
from fi_stream.kafka.reading import partitions_of
from fi_stream.settings import Settings
from fi_stream.signing import sign_batch
from schemas import DecodeError, ResponseBatch, Tensor, decode, encode, headers

log = structlog.get_logger(__name__)

#: Query ids remembered as copied (oldest forgotten first): one answer per query is enough.
REMEMBER = 100_000


class CopycatParticipant(ParticipantService):
    name = "participant-copycat"

    def __init__(self, settings: Settings, *, participant_id: str, model_dir: Path,
                 copy_from: str | None = None) -> None:
        super().__init__(settings, participant_id=participant_id, model_dir=model_dir,
                         behaviour="copycat")
        #: Whose answers to copy; None: the first answer seen to each query, from anyone.
        self.copy_from = copy_from
        self._copied: OrderedDict[str, None] = OrderedDict()
        self.copied = 0

    async def _run(self) -> None:
        assert self._consumer is not None
        self._consumer.unsubscribe()  # it answers no query itself
        reader = make_consumer(self.settings, group_id=None)
        await reader.start()
        try:
            tps = await partitions_of(reader, self.topics.responses)
            reader.assign(tps)
            await reader.seek_to_end(*tps)
            log.warning("strategic_participant", behaviour="copycat", copy_from=self.copy_from)
            while not self._stopping.is_set():
                got = await reader.getmany(timeout_ms=IDLE_POLL_MS)
                for records in got.values():
                    for record in records:
                        await self._copy(record)
        finally:
            await reader.stop()

    async def _copy(self, record: ConsumerRecord[bytes, bytes]) -> None:
        assert self._producer is not None
        try:
            batch = decode(record.value, ResponseBatch)
        except DecodeError:
            return
        if batch.participant_id == self.participant_id or (
                self.copy_from is not None and batch.participant_id != self.copy_from):
            return
        picks = [i for i, q in enumerate(batch.answered) if q not in self._copied]
        if not picks:
            return
        rows: np.ndarray[Any, Any] = batch.outputs.to_numpy()[picks]
        answered = [batch.answered[i] for i in picks]
        for qid in answered:
            self._copied[qid] = None
        while len(self._copied) > REMEMBER:
            self._copied.popitem(last=False)
        copy = ResponseBatch(
            participant_id=self.participant_id, batch_id=uuid.uuid4().hex, task=batch.task,
            model_version=self.spec.version, privacy=self._privacy, produced_at_ms=now_ms(),
            query_partition=batch.query_partition, answered=answered,
            outputs=Tensor.from_numpy(np.ascontiguousarray(rows)))
        await self._producer.send(
            self.topics.responses, encode(sign_batch(copy, self._key)),
            key=self.participant_id.encode(), partition=record.partition,
            headers=headers(ResponseBatch))
        self.copied += len(answered)
        self.answered += len(answered)
