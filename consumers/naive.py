"""The naive baseline participant `fi-stream bench e2e` measures the batched pipeline against
(`participant.pipeline = "naive"`), not for production.

It lives here, beside the participant it simplifies, rather than beside the benchmark's load
generator (`producers/load.py`): it is a `ParticipantService`, and DESIGN's imports point
one way (schemas ← fi_stream ← producers, consumers ← the CLI), so neither `producers/` nor
`fi_stream/` may import it. `consumers.participant.make_participant` picks it by setting, as
it picks the copycat (`consumers/copycat.py`), the other service for experiments only.
"""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition

from consumers.participant import ParticipantService


class NaiveParticipantService(ParticipantService):
    """The loop a first consumer usually is: per query one forward pass, one awaited
    produce, one offset commit."""

    name = "participant-naive"

    async def _run(self) -> None:
        assert self._consumer is not None
        while not self._stopping.is_set():
            for record in await self._next_batch():
                batch = await self._prepare([record])
                await self._publish(batch)
                await asyncio.gather(*batch.acks)
                await self._commit(
                    {TopicPartition(record.topic, record.partition): record.offset + 1})
