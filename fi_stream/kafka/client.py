"""Producer, consumer and admin factories: one place that turns Settings into client kwargs."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.helpers import create_ssl_context

from fi_stream.errors import KafkaUnreachableError
from fi_stream.settings import Settings


def bootstrap_servers(settings: Settings) -> str:
    """The cluster to use: `FI_KAFKA_BOOTSTRAP` if given, else the local broker's port."""
    return settings.kafka.bootstrap or f"127.0.0.1:{settings.kafka.local_port}"


def _common(settings: Settings) -> dict[str, Any]:
    k = settings.kafka
    out: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers(settings),
        "security_protocol": k.security_protocol,
    }
    if k.security_protocol in ("SSL", "SASL_SSL"):
        out["ssl_context"] = create_ssl_context(cafile=k.ssl_cafile)
    if k.security_protocol.startswith("SASL"):
        out.update(
            sasl_mechanism=k.sasl_mechanism or "PLAIN",
            sasl_plain_username=k.sasl_username,
            sasl_plain_password=k.sasl_password,
        )
    return out


def make_producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    """An idempotent producer (acks=all) batching for up to 2 ms: throughput without reordering."""
    kwargs: dict[str, Any] = {
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 2,
        "max_batch_size": 1 << 20,
        "max_request_size": 8 << 20,
        "compression_type": None,
    }
    if overrides.get("transactional_id"):
        # The coordinator writes a transaction's markers after EndTxn returns; the next
        # transaction's AddOffsetsToTxn meanwhile gets CONCURRENT_TRANSACTIONS and waits
        # this long. At aiokafka's default (100 ms) that wait was most of the aggregator's
        # p99 at low rates.
        kwargs["retry_backoff_ms"] = 5
    kwargs.update(_common(settings))
    kwargs.update(overrides)
    return AIOKafkaProducer(**kwargs)


def make_consumer(
    settings: Settings, *topics: str, group_id: str | None, **overrides: Any
) -> AIOKafkaConsumer:
    """A consumer that never auto-commits: services commit after their output is acked."""
    kwargs: dict[str, Any] = {
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "max_partition_fetch_bytes": 8 << 20,
        "fetch_max_wait_ms": 50,
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 2_000,
    }
    kwargs.update(_common(settings))
    kwargs.update(overrides)
    return AIOKafkaConsumer(*topics, **kwargs)


def make_admin(settings: Settings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**_common(settings), request_timeout_ms=15_000)


async def probe(settings: Settings) -> None:
    """Fetch the cluster's metadata once, within `kafka.connect_timeout_s`, or raise
    KafkaUnreachableError naming the address, the wait and the fix.

    aiokafka's own start-up has no overall bound: with no broker it retries for seconds,
    and a port where something else listens holds it for the whole request timeout (40 s)
    before a traceback. Commands probe first so either ends in one line, in bounded time.
    """
    timeout = settings.kafka.connect_timeout_s
    where = bootstrap_servers(settings)
    client = AIOKafkaClient(**_common(settings), request_timeout_ms=int(timeout * 1000))
    quiet = logging.getLogger("aiokafka")
    was_disabled, quiet.disabled = quiet.disabled, True  # its retries are this one failure
    try:
        async with asyncio.timeout(timeout):
            await client.bootstrap()
    except Exception as exc:
        if isinstance(exc, TimeoutError):
            cause = "connected, but no Kafka answer" if _listening(where) else "no answer"
        elif "Unable to bootstrap" in str(exc):
            cause = "connection refused or host unreachable"
        else:
            cause = str(exc) or type(exc).__name__
        hint = ("start the local broker with `fi-stream kafka up`" if not settings.kafka.bootstrap
                else "check FI_KAFKA__BOOTSTRAP (is a Kafka broker listening there?)")
        raise KafkaUnreachableError(
            f"cannot reach Kafka at {where} within {timeout:g} s ({cause}); {hint}") from exc
    finally:
        await client.close()
        quiet.disabled = was_disabled


def _listening(bootstrap: str) -> bool:
    """Does something accept TCP connections at the first bootstrap address?"""
    import socket

    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
            return True
    except (OSError, ValueError):
        return False
