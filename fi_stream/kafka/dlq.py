"""Dead-letter queue: bad records are kept with their reason and origin, never dropped."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, RecordMetadata
from prometheus_client import CollectorRegistry, Counter
from structlog import get_logger

log = get_logger(__name__)


def dead_letter_headers(record: ConsumerRecord[bytes, bytes], reason: str, detail: str,
                        consumer: str) -> list[tuple[str, bytes]]:
    """Why the record is here and where it came from (DESIGN §2, fi.dlq)."""
    return [
        ("error", reason.encode()),
        ("error-detail", detail[:2000].encode()),
        ("source-topic", record.topic.encode()),
        ("source-partition", str(record.partition).encode()),
        ("source-offset", str(record.offset).encode()),
        ("consumer", consumer.encode()),
    ]


def key_text(record: ConsumerRecord[bytes, bytes]) -> str | None:
    """The record's key as text (the query id of a query, result or label record), for the
    `query_id` of a log line about it; None when absent or not a plausible id."""
    key: bytes | None = record.key
    if not key or len(key) > 128:
        return None
    try:
        return key.decode()
    except UnicodeDecodeError:
        return None


class DeadLetterQueue:
    """Sends a record's original key and bytes to the DLQ topic with headers saying why."""

    def __init__(
        self, producer: AIOKafkaProducer, topic: str, consumer: str,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._consumer = consumer
        self._metric = Counter(
            "fi_dlq_records", "Records sent to the dead-letter queue", ["reason"],
            registry=registry if registry is not None else CollectorRegistry(),
        )

    async def send(self, record: ConsumerRecord[bytes, bytes], reason: str, detail: str, *,
                   query_id: str | None = None) -> asyncio.Future[RecordMetadata]:
        """Enqueue the dead letter; the caller awaits the returned ack before it commits the
        source offset, so a dead letter is never lost. `query_id`: the record's, if it is
        about one query (then every log line says which)."""
        headers = dead_letter_headers(record, reason, detail, self._consumer)
        ack: asyncio.Future[RecordMetadata] = await self._producer.send(
            self._topic, record.value, key=record.key, headers=headers
        )
        self._metric.labels(reason).inc()
        log.warning("dead_letter", reason=reason, detail=detail, topic=record.topic,
                    partition=record.partition, offset=record.offset, query_id=query_id)
        return ack
