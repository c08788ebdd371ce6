"""The two KIP-447 pieces of `fi_stream.kafka.fencing`, each on the real broker: a stale
generation's transaction is refused and really aborted, and a new owner's offset fetch
waits for a pending transactional commit."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from fi_stream.kafka import make_admin, make_consumer, make_producer
from fi_stream.kafka.fencing import (
    GroupFenced,
    enable_group_fencing,
    fetch_stable_offsets,
    membership,
    send_offsets_fenced,
)
from fi_stream.settings import Settings
from tests.integration.harness import read_topic

pytestmark = pytest.mark.kafka


def _group(settings: Settings) -> str:
    return f"{settings.kafka.topic_prefix}fenced"


@pytest.fixture
async def member(topics: Settings) -> AsyncIterator[AIOKafkaConsumer]:
    """A live member of group `fenced` that owns the queries topic's partitions."""
    consumer = make_consumer(topics, topics.topic_names.queries, group_id=_group(topics))
    await consumer.start()
    try:
        async with asyncio.timeout(30):
            while membership(consumer) is None or not consumer.assignment():
                await consumer.getmany(timeout_ms=100)
        yield consumer
    finally:
        await consumer.stop()


@pytest.fixture
async def producer(topics: Settings) -> AsyncIterator[AIOKafkaProducer]:
    producer = make_producer(topics, transactional_id="fencing-test")
    enable_group_fencing(producer)
    await producer.start()
    yield producer
    await producer.stop()


async def test_a_stale_generation_is_refused_and_its_records_never_appear(
        topics: Settings, member: AIOKafkaConsumer, producer: AIOKafkaProducer) -> None:
    t = topics.topic_names
    current = membership(member)
    assert current is not None
    stale = dataclasses.replace(current, generation_id=current.generation_id - 1)
    offsets = {TopicPartition(t.queries, 0): OffsetAndMetadata(1, "")}

    with pytest.raises(GroupFenced, match="past generation"):
        async with producer.transaction():
            await producer.send(t.results, b"zombie", key=b"k", partition=0)
            await send_offsets_fenced(producer, offsets, stale)
    # The same producer's next transaction must not carry the aborted record along.
    async with producer.transaction():
        await producer.send(t.results, b"owner", key=b"k", partition=0)
        await send_offsets_fenced(producer, offsets, current)

    records = await read_topic(topics, t.results, min_records=1)
    assert [r.value for r in records] == [b"owner"]
    admin = make_admin(topics)
    await admin.start()
    try:
        committed = await fetch_stable_offsets(admin, _group(topics), list(offsets), timeout_s=10)
    finally:
        await admin.close()
    assert committed == offsets


async def test_the_offset_fetch_waits_for_a_pending_transactional_commit(
        topics: Settings, member: AIOKafkaConsumer, producer: AIOKafkaProducer) -> None:
    t = topics.topic_names
    current = membership(member)
    assert current is not None
    tp = TopicPartition(t.queries, 1)
    admin = make_admin(topics)
    await admin.start()
    try:
        await producer.begin_transaction()
        await send_offsets_fenced(producer, {tp: OffsetAndMetadata(7, "m")}, current)
        with pytest.raises(Exception, match="still unstable"):
            await fetch_stable_offsets(admin, _group(topics), [tp], timeout_s=0.5)
        waiting = asyncio.create_task(
            fetch_stable_offsets(admin, _group(topics), [tp], timeout_s=10))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        await producer.commit_transaction()
        assert await waiting == {tp: OffsetAndMetadata(7, "m")}
    finally:
        await admin.close()
