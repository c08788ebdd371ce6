"""Labels arriving after the fact: `fi.feedback`, one Feedback event per labelled query,
keyed by the query's BLOCK id (`split_query_id(qid)[0]`): a label lands on the partition of
its query block and of that block's results (the topics share the partition count and the
key), where merit joins them, partition by partition."""

from __future__ import annotations

from collections.abc import Mapping

from fi_stream.clock import now_ms
from fi_stream.kafka import make_producer
from fi_stream.settings import Settings
from schemas import Feedback, encode, headers
from schemas.blocks import split_query_id


def feedback_key(query_id: str) -> bytes:
    """The Kafka key of a label for `query_id` (a derived id `block.row`): its block id.
    ValueError for an id that is not of that form (no block, so no partition to land on)."""
    return split_query_id(query_id)[0].encode()


async def publish_labels(settings: Settings, labels: Mapping[str, int]) -> None:
    """Publish one Feedback event per (query id → true label) and wait for the acks."""
    keys = {query_id: feedback_key(query_id) for query_id in labels}  # fail before sending
    producer = make_producer(settings)
    await producer.start()
    try:
        for query_id, label in labels.items():
            event = Feedback(query_id=query_id, label=label, created_at_ms=now_ms())
            await producer.send(settings.topic_names.feedback, encode(event),
                                key=keys[query_id], headers=headers(Feedback))
        await producer.flush()
    finally:
        await producer.stop()
