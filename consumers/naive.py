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
from typing import Any

import numpy as np
from aiokafka import TopicPartition

from consumers.participant import ParticipantService
from fi_stream.reuse import Answers, Reserve


class NaiveParticipantService(ParticipantService):
    """The loop a first consumer usually is: per query one forward pass, and per record
    (a query block; a single query is a block of one) one awaited produce and one offset
    commit. Same decoding, screening, budget and signing code as the batched service."""

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

    def _answer(self, inputs: np.ndarray[Any, Any], reserve: Reserve) -> Answers:
        """One row at a time (one forward pass, one budget reservation each), however many
        rows the record's block carries."""
        answered: list[int] = []
        rows: list[np.ndarray[Any, Any]] = []
        reused = fresh = 0
        for j in range(len(inputs)):
            got = super()._answer(inputs[j:j + 1], reserve)
            answered += [j] * len(got.answered)
            rows.append(got.outputs)
            reused, fresh = reused + got.reused, fresh + got.fresh
        outputs = np.concatenate(rows) if rows else np.zeros((0, self.spec.num_classes),
                                                             np.float32)
        return Answers(answered=answered, outputs=outputs, reused=reused, fresh=fresh)
