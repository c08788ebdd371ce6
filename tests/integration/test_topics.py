"""`topics create` replicates to fit the cluster it finds and sets min.insync.replicas."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fi_stream.errors import KafkaSetupError
from fi_stream.kafka import make_admin, prepare_topics
from fi_stream.kafka.topics import Replication, _existing_replication
from fi_stream.settings import Settings

pytestmark = pytest.mark.kafka


async def test_one_broker_gets_one_replica_and_one_in_sync(
        settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory()
    report = await prepare_topics(settings)
    assert report.brokers == 1 and report.replication == Replication(1, 1)
    assert len(report.created) == 7 and not report.under_replicated
    admin = make_admin(settings)
    await admin.start()
    try:
        have = await _existing_replication(admin, report.created)
    finally:
        await admin.close()
    assert set(have.values()) == {Replication(1, 1)}
    again = await prepare_topics(settings)
    assert again.created == [] and not again.under_replicated


async def test_more_replicas_than_brokers_is_refused_before_creating_anything(
        settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory(kafka={"replication_factor": 3})
    with pytest.raises(KafkaSetupError, match="needs 3 brokers"):
        await prepare_topics(settings)
