"""Reading topics: the services' polls, and reading up to a point (registry catch-up, demo,
audit)."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from fi_stream.errors import KafkaSetupError

Records = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]


async def poll(consumer: AIOKafkaConsumer, timeout_ms: int, max_records: int) -> Records:
    """`getmany`, but never a busy loop: with no assignment yet, or the cluster unreachable,
    getmany returns at once, so an empty answer that came early waits out the timeout."""
    started = time.monotonic()
    got: Records = await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
    if not got and time.monotonic() - started < timeout_ms / 2000:
        await asyncio.sleep(timeout_ms / 1000)
    return got


async def partitions_of(consumer: AIOKafkaConsumer, topic: str, wait: float = 10.0
                        ) -> list[TopicPartition]:
    """All partitions of `topic`. A topic created a moment ago may take a little while to
    reach the metadata of every broker, so ask again for up to `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        # aiokafka's public `topics()` does not refresh the cluster view that
        # `partitions_for_topic` reads; tracking the topic on the client does.
        await consumer._client.add_topic(topic)
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return [TopicPartition(topic, p) for p in sorted(partitions)]
        if time.monotonic() > deadline:
            raise KafkaSetupError(f"topic {topic} does not exist: run `fi-stream topics create`")
        await asyncio.sleep(0.2)


async def behind(consumer: AIOKafkaConsumer, end: dict[TopicPartition, int]) -> bool:
    """True while some partition's position is short of its `end` offset."""
    for tp, offset in end.items():
        if await consumer.position(tp) < offset:
            return True
    return False


async def read_to_end(consumer: AIOKafkaConsumer, topic: str
                      ) -> list[ConsumerRecord[bytes, bytes]]:
    """Assign every partition of `topic` from the beginning; return all records up to the
    end offsets as of the call (for read_committed consumers: the last stable offsets)."""
    tps = await partitions_of(consumer, topic)
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    end = await consumer.end_offsets(tps)
    out: list[ConsumerRecord[bytes, bytes]] = []
    while await behind(consumer, end):
        got = await consumer.getmany(timeout_ms=300)
        out.extend(r for records in got.values() for r in records)
    return out


async def read_range(consumer: AIOKafkaConsumer, tp: TopicPartition, start: int
                     ) -> tuple[list[ConsumerRecord[bytes, bytes]], int]:
    """Records of one partition from `start` to its end as of the call, and that end."""
    consumer.assign([tp])
    end = (await consumer.end_offsets([tp]))[tp]
    begin = (await consumer.beginning_offsets([tp]))[tp]
    consumer.seek(tp, max(start, begin))
    out: list[ConsumerRecord[bytes, bytes]] = []
    while await behind(consumer, {tp: end}):
        got = await consumer.getmany(tp, timeout_ms=300)
        out.extend(got.get(tp, []))
    return out, end


async def fetch_records(consumer: AIOKafkaConsumer, topic: str, refs: set[tuple[int, int]]
                        ) -> dict[tuple[int, int], ConsumerRecord[bytes, bytes]]:
    """The records at (partition, offset) `refs` of `topic`: one range read per partition,
    from its smallest to its largest wanted offset."""
    wanted: dict[int, set[int]] = {}
    for partition, offset in refs:
        wanted.setdefault(partition, set()).add(offset)
    out: dict[tuple[int, int], ConsumerRecord[bytes, bytes]] = {}
    for partition, offsets in sorted(wanted.items()):
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, min(offsets))
        last = max(offsets)
        while await consumer.position(tp) <= last:
            got = await consumer.getmany(tp, timeout_ms=300)
            for record in got.get(tp, []):
                if record.offset in offsets:
                    out[(partition, record.offset)] = record
    return out
