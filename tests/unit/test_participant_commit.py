"""A participant whose group forgot it (stalled past its session) keeps answering: the
refused commit is dropped, never fatal, and only partitions it still owns are committed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError

from consumers.participant import ParticipantService, _Batch
from fi_stream.settings import load_settings

TP0, TP1 = TopicPartition("fi.queries", 0), TopicPartition("fi.queries", 1)


class _Consumer:
    def __init__(self, owned: set[TopicPartition], refuse: int) -> None:
        self.owned, self.refuse = owned, refuse
        self.commits: list[dict[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return self.owned

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self.refuse:
            self.refuse -= 1
            raise CommitFailedError()
        self.commits.append(dict(offsets))


class _Record:
    def __init__(self, tp: TopicPartition, offset: int) -> None:
        self.topic, self.partition, self.offset = tp.topic, tp.partition, offset


def _service(consumer: _Consumer) -> ParticipantService:
    service = ParticipantService(load_settings(None), participant_id="p1",
                                 model_dir=Path("unused"))
    service._consumer = consumer  # type: ignore[assignment]
    return service


def _batch(*records: _Record) -> _Batch:
    done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    return _Batch(list(records), None, [done])  # type: ignore[arg-type]


async def test_a_refused_commit_does_not_stop_the_ack_stage() -> None:
    consumer = _Consumer({TP0}, refuse=1)
    service = _service(consumer)
    inbox: asyncio.Queue[_Batch | None] = asyncio.Queue()
    await inbox.put(_batch(_Record(TP0, 0), _Record(TP0, 1)))
    stage = asyncio.create_task(service._ack_stage(inbox))
    await asyncio.sleep(1.2)  # past COMMIT_INTERVAL_S: the first commit is refused
    await inbox.put(_batch(_Record(TP0, 2)))
    await inbox.put(None)
    await asyncio.wait_for(stage, 5)  # no CommitFailedError escapes
    assert service.commits_refused == 1
    assert consumer.commits == [{TP0: 3}]  # the batch after the rejoin is committed


async def test_partitions_no_longer_owned_are_left_to_their_new_owner() -> None:
    consumer = _Consumer({TP1}, refuse=0)
    service = _service(consumer)
    await service._commit({TP0: 5, TP1: 7})
    await service._commit({TP0: 9})
    assert consumer.commits == [{TP1: 7}]
