"""Shared fixtures: a real broker for the session, fresh topics and groups per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from fi_stream.logging import configure_logging
from fi_stream.models import save_model, train_participant
from fi_stream.settings import Settings, load_settings

#: The session's model directories (and their ledgers) serve every test, so the modest
#: default budget (ε = 100 for 1,000 answers) would run out part-way through the suite:
#: tests of the pipeline get a budget they cannot exhaust; tests of budgets and mechanisms
#: set their own.
PIPELINE_PRIVACY = {"noise_multiplier": 0.3, "epsilon_max": 1e6}

TEST_PORT = int(os.environ.get("FI_TEST_KAFKA_PORT", "29092"))


@pytest.fixture(scope="session", autouse=True)
def _logging() -> None:
    configure_logging("WARNING", json=False)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """FI_KAFKA_BOOTSTRAP if given; else a local KRaft broker started for this session."""
    given = os.environ.get("FI_KAFKA_BOOTSTRAP")
    if given:
        yield given
        return
    import asyncio

    from fi_stream.kafka.local_broker import LocalKafka

    home = Path(os.environ.get("FI_TEST_KAFKA_HOME", ".fi/test-kafka"))
    broker = LocalKafka(home, port=TEST_PORT, controller_port=TEST_PORT + 1)
    if _listening(TEST_PORT):  # another session's broker: use it, leave it running
        yield broker.bootstrap
        return
    asyncio.run(broker.up(timeout=120))
    yield broker.bootstrap
    broker.down()


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def settings_factory(kafka_bootstrap: str) -> Callable[..., Settings]:
    """Settings on the test broker with a topic prefix of their own (isolated topics, groups)."""

    def make(**overrides: object) -> Settings:
        prefix = f"t-{uuid.uuid4().hex[:10]}."
        kafka = {"bootstrap": kafka_bootstrap, "topic_prefix": prefix, "partitions": 2}
        kafka.update(overrides.pop("kafka", {}))  # type: ignore[arg-type]
        privacy = dict(PIPELINE_PRIVACY)
        privacy.update(overrides.pop("privacy", {}))  # type: ignore[arg-type]
        return load_settings(None, kafka=kafka, privacy=privacy, **overrides)

    return make


@pytest.fixture
async def topics(settings_factory: Callable[..., Settings]) -> AsyncIterator[Settings]:
    """Settings whose topics exist."""
    from fi_stream.kafka import ensure_topics

    settings = settings_factory()
    await ensure_topics(settings)
    yield settings


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three real digits participants, trained once per session on non-IID shards."""
    root = tmp_path_factory.mktemp("models")
    dirs = {}
    for k in range(3):
        pid = f"p{k + 1}"
        module, spec = train_participant(shard=k, of=3, alpha=1.0, seed=0, participant_id=pid)
        save_model(root / pid, module, spec)
        dirs[pid] = root / pid
    return dirs
