"""The copycat: a strategic participant for experiments and tests only.

It answers nothing itself. It reads fi.responses (which the secured cluster's ACLs should
deny a participant; see the README's security section) and re-sends the answers another
participant gave, under its own key, to the same partition, at once — well within the
deadline: a response block of its own (signed by itself) with the spans of the query
blocks it has not copied yet, every row of each as the original had it (answers and
declines). The rows are bit-for-bit the originals: the aggregator's copy detection
(fi_stream.copycat) must flag every answered one.
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
from fi_stream.block_signing import sign_response_block
from fi_stream.clock import now_ms
from fi_stream.kafka import make_consumer
from fi_stream.kafka.reading import partitions_of
from fi_stream.settings import Settings
from schemas import DecodeError
from schemas.blocks import (
    ResponseBlock,
    ResponseBlockHeader,
    block_headers,
    decode_response_block,
    encode_response_block,
)

log = structlog.get_logger(__name__)

#: Query blocks (partition, block id) remembered as copied (oldest forgotten first): one
#: answer per query is enough.
REMEMBER = 100_000


class CopycatParticipant(ParticipantService):
    name = "participant-copycat"

    def __init__(self, settings: Settings, *, participant_id: str, model_dir: Path,
                 copy_from: str | None = None) -> None:
        super().__init__(settings, participant_id=participant_id, model_dir=model_dir,
                         behaviour="copycat")
        #: Whose answers to copy; None: the first answer seen to each query, from anyone.
        self.copy_from = copy_from
        self._copied: OrderedDict[tuple[int, str], None] = OrderedDict()
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
            block = decode_response_block(record.value)
        except DecodeError:
            return
        if block.participant_id == self.participant_id or (
                self.copy_from is not None and block.participant_id != self.copy_from):
            return
        picks = [(b, start, stop) for b, start, stop in block.span_rows()
                 if (block.query_partition, b) not in self._copied
                 and bool((block.status[start:stop] == 0).any())]
        if not picks:
            return
        for b, _, _ in picks:
            self._copied[(block.query_partition, b)] = None
        while len(self._copied) > REMEMBER:
            self._copied.popitem(last=False)
        outputs, status, details = _rows_of(block, picks)
        copy = ResponseBlock(
            self.participant_id, uuid.uuid4().hex, block.task, self.spec.version,
            self._privacy, now_ms(), block.query_partition,
            [(b, stop - start) for b, start, stop in picks], outputs, status, details)
        await self._producer.send(
            self.topics.responses, sign_response_block(encode_response_block(copy), self._key),
            key=self.participant_id.encode(), partition=record.partition,
            headers=block_headers(ResponseBlockHeader))
        answered = int(np.count_nonzero(status == 0))
        self.copied += answered
        self.answered += answered


def _rows_of(block: ResponseBlock, picks: list[tuple[str, int, int]]
             ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], dict[int, str]]:
    """The outputs, status and details (re-keyed) of the record rows of `picks`, in order."""
    outputs = np.concatenate([block.outputs[start:stop] for _, start, stop in picks])
    status = np.concatenate([block.status[start:stop] for _, start, stop in picks])
    details: dict[int, str] = {}
    base = 0
    for _, start, stop in picks:
        details.update({base + r - start: d for r, d in block.details.items()
                        if start <= r < stop})
        base += stop - start
    return outputs, status, details
