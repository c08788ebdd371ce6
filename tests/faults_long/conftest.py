"""The long fault suite (`make test-faults`, not part of `make test`): its own brokers on
ports 39200-39399, killed and paused at will; the shared test broker is never touched."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from fi_stream.kafka.local_broker import LocalKafka
from fi_stream.kafka.local_cluster import LocalCluster
from fi_stream.settings import Settings, load_settings
from tests.conftest import PIPELINE_PRIVACY
from tests.fault.conftest import children  # noqa: F401 — the fault suite's process reaper

BROKER_PORT = 39200
CLUSTER_PORT = 39300


def fault_settings(bootstrap: str, **kafka: object) -> Settings:
    """The scenarios share the session's trained participants and their ledgers: with the
    default budget the first scenarios spend it and later ones see every query declined
    (all `insufficient`), so they get the pipeline tests' budget (tests/conftest.py)."""
    return load_settings(None, kafka={"bootstrap": bootstrap, "partitions": 2,
                                      "topic_prefix": f"f-{uuid.uuid4().hex[:8]}.", **kafka},
                         privacy=dict(PIPELINE_PRIVACY))


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalKafka]:
    """A single broker of this test's own (started by the test), always stopped after."""
    kafka = LocalKafka(tmp_path / "kafka", port=BROKER_PORT, controller_port=BROKER_PORT + 1)
    try:
        yield kafka
    finally:
        pid = kafka.status().pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 18)  # SIGCONT: a paused broker cannot shut down
        kafka.down(timeout=20)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    nodes = LocalCluster(tmp_path / "cluster", base_port=CLUSTER_PORT)
    try:
        await nodes.up()
        yield nodes
    finally:
        await asyncio.to_thread(nodes.kill)
