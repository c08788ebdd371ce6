"""Labels arriving after the fact: `fi.feedback`, keyed by query id, so a label lands on the
same partition number as its query (both topics share the partition count and key)."""

from __future__ import annotations

from collections.abc import Mapping

from fi_stream.clock import now_ms
from fi_stream.kafka import make_producer
from fi_stream.settings import Settings
from schemas import Feedback, encode, headers


async def publish_labels(settings: Settings, labels: Mapping[str, int]) -> None:
    """Publish one Feedback event per (query id → true label) and wait for the acks."""
    producer = make_producer(settings)
    await producer.start()
    try:
        for query_id, label in labels.items():
            event = Feedback(query_id=query_id, label=label, created_at_ms=now_ms())
            await producer.send(settings.topic_names.feedback, encode(event),
                                key=query_id.encode(), headers=headers(Feedback))
        await producer.flush()
    finally:
        await producer.stop()
