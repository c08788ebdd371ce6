"""The topics of DESIGN §2 and an idempotent `ensure_topics` that creates and checks them."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from fi_stream.errors import KafkaSetupError
from fi_stream.kafka.client import make_admin
from fi_stream.settings import Settings

_FOREVER = "-1"
_WEEK_MS = str(7 * 24 * 3600 * 1000)


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Queries, responses and results share the partition count: the join is co-partitioned."""
    t = settings.topic_names
    p = settings.kafka.partitions
    audit = {"retention.ms": _FOREVER, "cleanup.policy": "delete"}
    return [
        TopicSpec(t.queries, p, audit),
        TopicSpec(t.responses, p, audit),
        TopicSpec(t.results, p, audit),
        TopicSpec(t.incentives, p, audit),
        TopicSpec(t.feedback, p, audit),
        TopicSpec(t.registry, 1, {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}),
        TopicSpec(t.dlq, 1, {"retention.ms": _WEEK_MS}),
    ]


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str],
                            wait: float = 15.0) -> dict[str, int]:
    """Partition counts, once every partition has a leader (a topic created a moment ago
    shows no partitions, then leaderless ones, for a short while)."""
    deadline = time.monotonic() + wait
    while True:
        described = await admin.describe_topics(names)
        counts = {d["topic"]: len(d["partitions"]) for d in described}
        led = all(p["leader"] >= 0 for d in described for p in d["partitions"])
        if (all(counts.get(n) for n in names) and led) or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.2)


async def ensure_topics(settings: Settings) -> list[str]:
    """Create missing topics; fail if an existing co-partitioned topic has the wrong count.

    Returns the names it created.
    """
    specs = topic_specs(settings)
    admin = make_admin(settings)
    try:
        await admin.start()
    except Exception as exc:
        raise KafkaSetupError(
            f"cannot reach Kafka to create topics ({exc}); run `fi-stream kafka up` "
            "or set FI_KAFKA_BOOTSTRAP"
        ) from exc
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if missing:
            # A concurrent creator may win the race; the partition check below still runs.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([
                    NewTopic(s.name, s.partitions, settings.kafka.replication_factor,
                             topic_configs=s.config)
                    for s in missing
                ])
        counts = await _partition_counts(admin, [s.name for s in specs])
        for s in specs:
            if counts.get(s.name) != s.partitions:
                raise KafkaSetupError(
                    f"topic {s.name} has {counts.get(s.name)} partitions, expected {s.partitions};"
                    " the co-partitioned join needs equal counts: delete it or change"
                    " FI_KAFKA__PARTITIONS"
                )
        return [s.name for s in missing]
    finally:
        await admin.close()


async def delete_topics(settings: Settings) -> None:
    """Delete the topics of `settings` (a benchmark's own prefix): each run's partitions
    would otherwise stay on the broker and cost every later run."""
    admin = make_admin(settings)
    await admin.start()
    try:
        await admin.delete_topics([s.name for s in topic_specs(settings)])
    finally:
        await admin.close()
