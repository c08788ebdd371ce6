"""The topics of DESIGN §2 and an idempotent `ensure_topics` that creates and checks them,
replicated to fit the cluster it finds."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

from fi_stream.errors import KafkaSetupError
from fi_stream.kafka.client import make_admin
from fi_stream.settings import Settings

log = structlog.get_logger(__name__)

_FOREVER = "-1"
_WEEK_MS = str(7 * 24 * 3600 * 1000)


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


@dataclass(frozen=True, slots=True)
class Replication:
    """Replicas per partition, and how many must be in sync for a write (acks=all) to
    succeed: with `factor - min_insync` brokers down, topics stay writable."""

    factor: int
    min_insync: int


def replication_for(brokers: int, factor: int | None = None,
                    min_insync: int | None = None) -> Replication:
    """Replication that fits a cluster of `brokers`: unless given, 3 replicas (fewer on a
    smaller cluster) and a majority of them in sync (3 → 2, 2 → 1, 1 → 1), so a topic
    survives one broker's loss without losing acked writes and stays writable."""
    if brokers < 1:
        raise KafkaSetupError("the cluster reports no brokers")
    rf = min(3, brokers) if factor is None else factor
    if rf > brokers:
        raise KafkaSetupError(
            f"replication factor {rf} needs {rf} brokers, the cluster has {brokers}: "
            "lower --replication-factor (FI_KAFKA__REPLICATION_FACTOR) or add brokers")
    isr = max(1, (rf + 1) // 2) if min_insync is None else min_insync
    if isr > rf:
        raise KafkaSetupError(
            f"min.insync.replicas {isr} exceeds the replication factor {rf}: no write "
            "could succeed; lower --min-insync-replicas (FI_KAFKA__MIN_INSYNC_REPLICAS)")
    return Replication(rf, isr)


@dataclass(frozen=True, slots=True)
class TopicsReport:
    """What `prepare_topics` did: the topics it created with which replication, and the
    existing ones replicated below that (named with what they have)."""

    created: list[str]
    replication: Replication
    brokers: int
    under_replicated: dict[str, Replication]


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


async def _existing_replication(admin: AIOKafkaAdminClient, names: list[str]
                                ) -> dict[str, Replication]:
    """Each topic's smallest replica count over its partitions and its min.insync.replicas."""
    if not names:
        return {}
    described = await admin.describe_topics(names)
    factors = {d["topic"]: min((len(p["replicas"]) for p in d["partitions"]), default=0)
               for d in described}
    responses = await admin.describe_configs([
        ConfigResource(ConfigResourceType.TOPIC, n, configs={"min.insync.replicas": None})
        for n in names])
    isr: dict[str, int] = {}
    for response in responses:
        for resource in response.to_object()["resources"]:
            for entry in resource["config_entries"]:
                if entry["config_names"] == "min.insync.replicas":
                    isr[resource["resource_name"]] = int(entry["config_value"])
    return {n: Replication(factors.get(n, 0), isr.get(n, 1)) for n in names}


def _check_partition_counts(specs: list[TopicSpec], counts: dict[str, int]) -> None:
    """Fail unless every topic has its spec's partition count (the join is co-partitioned)."""
    for s in specs:
        if counts.get(s.name) != s.partitions:
            raise KafkaSetupError(
                f"topic {s.name} has {counts.get(s.name)} partitions, expected {s.partitions};"
                " the co-partitioned join needs equal counts: delete it or change"
                " FI_KAFKA__PARTITIONS"
            )


def _under_replicated(have: dict[str, Replication], wanted: Replication, brokers: int
                      ) -> dict[str, Replication]:
    """The existing topics replicated below `wanted`, each logged (they are not changed)."""
    below = {name: r for name, r in have.items()
             if r.factor < wanted.factor or r.min_insync < wanted.min_insync}
    for name, r in sorted(below.items()):
        log.warning("topic_under_replicated", topic=name, replication_factor=r.factor,
                    min_insync_replicas=r.min_insync, wanted_factor=wanted.factor,
                    wanted_min_insync=wanted.min_insync, brokers=brokers)
    return below


async def ensure_topics(settings: Settings) -> list[str]:
    """Create missing topics; fail if an existing co-partitioned topic has the wrong count.

    Returns the names it created (see `prepare_topics` for the whole report).
    """
    return (await prepare_topics(settings)).created


async def prepare_topics(settings: Settings) -> TopicsReport:
    """Create missing topics replicated to fit the cluster (`replication_for`), warn about
    existing ones replicated below that, and check the co-partitioned partition counts."""
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
        brokers = len((await admin.describe_cluster())["brokers"])
        k = settings.kafka
        replication = replication_for(brokers, k.replication_factor, k.min_insync_replicas)
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if missing:
            # A concurrent creator may win the race; the partition check below still runs.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([
                    NewTopic(s.name, s.partitions, replication.factor, topic_configs={
                        **s.config, "min.insync.replicas": str(replication.min_insync)})
                    for s in missing
                ])
        _check_partition_counts(specs, await _partition_counts(admin, [s.name for s in specs]))
        have = await _existing_replication(
            admin, [s.name for s in specs if s.name in existing])
        below = _under_replicated(have, replication, brokers)
        return TopicsReport([s.name for s in missing], replication, brokers, below)
    finally:
        await admin.close()


async def delete_topics(settings: Settings) -> None:
    """Delete the topics of `settings` (a benchmark's own prefix): each run's partitions
    would otherwise stay on the broker and cost every later run."""
    admin = make_admin(settings)
    await admin.start()
    try:
        names = [s.name for s in topic_specs(settings)]
        prefix = settings.kafka.topic_prefix
        if prefix:  # and the participants' ledger topics (fi_stream.ledger_sync)
            names += [t for t in await admin.list_topics()
                      if t.startswith(f"{prefix}fi.ledger.")]
        await admin.delete_topics(names)
    finally:
        await admin.close()
