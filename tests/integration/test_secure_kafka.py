"""Kafka's own authorization on a real secured broker (`fi-stream kafka up --secure`):
SASL_SSL with SCRAM users, TLS from the CA it made, StandardAuthorizer and the federation's
ACLs (`fi-stream admin acls`). The broker refuses what the ACLs do not allow."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError

from fi_stream.errors import KafkaSetupError
from fi_stream.kafka import ensure_topics, make_admin, make_consumer, make_producer
from fi_stream.kafka.acls import Principals, apply_acls, federation_acls
from fi_stream.kafka.local_broker import LocalKafka
from fi_stream.settings import Settings, load_settings

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

#: Ports 49000-49999 are this suite's for brokers of its own (never the shared 29092).
PORT = int(os.environ.get("FI_TEST_SECURE_KAFKA_PORT", "49092"))
USERS = ["operator", "aggregator", "p1", "p2", "c1"]


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    home = tmp_path_factory.mktemp("secure-kafka")
    shared_libs = Path(os.environ.get("FI_TEST_KAFKA_HOME", ".fi/test-kafka")) / "libs"
    if (shared_libs / ".pom-stamp").exists():  # skip Maven: the same pinned jars
        import shutil
        shutil.copytree(shared_libs, home / "libs")
    broker = LocalKafka(home, port=PORT, controller_port=PORT + 1, secure=True, users=USERS)
    asyncio.run(broker.up(timeout=180))
    try:
        yield broker
    finally:
        broker.down()


def as_user(broker: LocalKafka, user: str, prefix: str) -> Settings:
    files = broker.secure_files
    return load_settings(None, kafka={
        "bootstrap": broker.bootstrap, "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": user,
        "sasl_password": files.passwords()[user], "ssl_cafile": str(files.ca),
        "topic_prefix": prefix, "partitions": 2})


@pytest.fixture
async def federation_topics(secure_broker: LocalKafka) -> str:
    """Fresh topics on the secured broker with the federation's ACLs; returns the prefix."""
    prefix = f"s-{uuid.uuid4().hex[:8]}."
    admin_settings = as_user(secure_broker, "admin", prefix)
    await ensure_topics(admin_settings)
    admin = make_admin(admin_settings)
    await admin.start()
    try:
        await apply_acls(admin, federation_acls(
            admin_settings.topic_names,
            Principals(participants=("p1", "p2"), clients=("c1",)), prefix=prefix))
    finally:
        await admin.close()
    return prefix


async def _produce(settings: Settings, topic: str) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"{}", key=b"k", partition=0)
    finally:
        await producer.stop()


async def _read(settings: Settings, topic: str, group: str | None = None) -> None:
    consumer = make_consumer(settings, topic, group_id=group)
    await consumer.start()
    try:
        await consumer.getmany(timeout_ms=2000)
    finally:
        await consumer.stop()


async def test_a_participant_writes_responses_but_not_registry_results_or_others(
        secure_broker: LocalKafka, federation_topics: str) -> None:
    p1 = as_user(secure_broker, "p1", federation_topics)
    t = p1.topic_names
    await _produce(p1, t.responses)  # its job
    for topic in (t.registry, t.results, t.incentives, t.queries):
        with pytest.raises(TopicAuthorizationFailedError):
            await _produce(p1, topic)
    # It may not read the others' answers (a copycat), nor results.
    for topic in (t.responses, t.results):
        with pytest.raises(TopicAuthorizationFailedError):
            await _read(p1, topic)
    # Its own consumer group only.
    await _read(p1, t.queries, group=f"{federation_topics}fi.participant.p1")
    with pytest.raises(GroupAuthorizationFailedError):
        await _read(p1, t.queries, group=f"{federation_topics}fi.participant.p2")


async def test_a_client_writes_queries_reads_results_and_nothing_else(
        secure_broker: LocalKafka, federation_topics: str) -> None:
    c1 = as_user(secure_broker, "c1", federation_topics)
    t = c1.topic_names
    await _produce(c1, t.queries)
    await _read(c1, t.results)
    with pytest.raises(TopicAuthorizationFailedError):
        await _read(c1, t.responses)
    with pytest.raises(TopicAuthorizationFailedError):
        await _produce(c1, t.registry)


async def test_only_the_operator_writes_the_registry(
        secure_broker: LocalKafka, federation_topics: str) -> None:
    await _produce(as_user(secure_broker, "operator", federation_topics),
                   as_user(secure_broker, "operator", federation_topics).topic_names.registry)
    agg = as_user(secure_broker, "aggregator", federation_topics)
    with pytest.raises(TopicAuthorizationFailedError):
        await _produce(agg, agg.topic_names.registry)
    # The operator's own tool says so in one line when run as the wrong user.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from fi_stream.admission import client_entry, publish
    with pytest.raises(KafkaSetupError, match="may not write"):
        await publish(agg, client_entry("c1", b"\x01" * 32), Ed25519PrivateKey.generate())


async def test_a_wrong_password_is_refused(secure_broker: LocalKafka) -> None:
    s = as_user(secure_broker, "p1", "x.")
    bad = load_settings(None, kafka={**s.kafka.model_dump(), "sasl_password": "guess"})
    with pytest.raises(KafkaSetupError, match=r"SaslAuthenticationFailed|Unable to bootstrap"):
        await ensure_topics(bad)


async def test_a_federation_runs_under_its_acls(
        secure_broker: LocalKafka, federation_topics: str,
        model_dirs: dict[str, Path], tmp_path: Path) -> None:
    """The ACLs are enough: participants, an aggregator (transactions) and a client, each
    as its own principal, with an operator-signed registry, answer a query."""
    from consumers.aggregator import AggregatorService
    from consumers.participant import make_participant
    from fi_stream.models import load_digits_split
    from producers.query_client import QueryClient

    from .harness import admit_models, operator_settings

    operator_kafka, operator = operator_settings(
        as_user(secure_broker, "operator", federation_topics))
    pub = operator_kafka.security.operator_pubkey

    def user(name: str) -> Settings:
        s = as_user(secure_broker, name, federation_topics)
        return load_settings(None, kafka=s.kafka.model_dump(),
                             security={"operator_pubkey": pub})

    # Fresh ledgers: the session's model dirs were spent by earlier tests under another σ,
    # which the default budget (ε = 100 per 1,000 answers) does not cover.
    dirs = {}
    for pid in ("p1", "p2"):
        dirs[pid] = tmp_path / pid
        shutil.copytree(model_dirs[pid], dirs[pid], ignore=shutil.ignore_patterns("privacy_*"))
    await admit_models(operator_kafka, operator, dirs)
    services: list[Any] = []
    participants = [make_participant(user(pid), participant_id=pid, model_dir=d)
                    for pid, d in dirs.items()]
    aggregator = AggregatorService(user("aggregator"), instance_id="a0")
    try:
        for p in participants:
            await p.start()
            services.append(p)
        await aggregator.start()
        services.append(aggregator)
        await aggregator.registry.wait_for(set(dirs), timeout=30)
        async with QueryClient(user("c1"), quorum=2) as client:
            result = await client.infer(load_digits_split().x_test[0], deadline_ms=30_000)
        assert result.status == "complete"
        assert [a.participant_id for a in result.included] == ["p1", "p2"]
    finally:
        for s in reversed(services):
            await s.stop()
