"""The operator-signed registry on the real broker: a hijack, a bare tombstone, sybils and a
forged admission are each refused by the aggregator and flagged by the audit; a signed
removal and rotation take effect."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consumers.auditor import Auditor
from fi_stream.admission import participant_entry, publish, remove
from fi_stream.models import load_digits_split
from fi_stream.operator import sign_entry
from fi_stream.registry import RegistryView
from fi_stream.settings import Settings
from fi_stream.signing import public_key_bytes
from producers.query_client import QueryClient
from schemas import Budget, Participant, Privacy, encode, headers

from .harness import HandParticipant, federation, operator_settings, read_topic

pytestmark = pytest.mark.kafka

X = load_digits_split().x_test


def _entry(pid: str, key: Ed25519PrivateKey) -> Participant:
    return participant_entry(pid, public_key_bytes(key), tasks=["digits"],
                             budget=Budget(epsilon_max=1e6, delta=1e-5),
                             privacy=Privacy(clip_norm=1.0, noise_multiplier=0.0))


async def test_attacks_on_the_registry_are_refused_and_audited(
        topics: Settings, model_dirs: dict[str, Path]) -> None:
    settings, operator = operator_settings(topics)
    registry = settings.topic_names.registry
    attacker = HandParticipant(settings, "p1")  # holds a key of its own for p1
    async with federation(settings, model_dirs, operator=operator) as fed, \
            QueryClient(settings, quorum=3) as client:
        # The attacks, written straight to fi.registry by anyone who can write Kafka:
        await attacker.register()  # hijack: a new, unsigned key for p1
        forged = _entry("p3", Ed25519PrivateKey.generate())
        await attacker.produce_raw(  # an admission signed by someone else's "operator" key
            registry, encode(sign_entry(forged, Ed25519PrivateKey.generate())), key="p3",
            hdrs=headers(Participant))
        for i in range(3):  # sybils
            await HandParticipant(settings, f"sybil{i}").register()
        await _tombstone(settings, "p2")  # a bare tombstone removing p2
        await asyncio.sleep(1.0)  # the aggregator's registry follows the topic

        view = fed.aggregator.registry
        assert set(view.participants) == {"p1", "p2", "p3"}
        assert view.participants["p1"].public_key != public_key_bytes(attacker.key)
        assert view.refused.get("unsigned") == 4 and view.refused.get("forged") == 1
        assert view.refused.get("bare_tombstone") == 1

        # Sybils make no query wait for them; the hijacker's answers are refused.
        result = await client.infer(X[0], deadline_ms=20_000)
        assert result.status == "complete"
        assert [a.participant_id for a in result.included] == ["p1", "p2", "p3"]
        assert result.completed_at_ms < result.deadline_ms
        await attacker.produce_raw(settings.topic_names.responses,
                                   attacker.batch(0, {result.query_id: 3}), key="p1",
                                   partition=0)

        # A signed removal takes p3 out; later queries no longer expect it.
        await remove(settings, "p3", operator)
        await asyncio.sleep(1.0)
        assert set(view.participants) == {"p1", "p2"}
        after = await client.infer(X[1], deadline_ms=20_000)
        assert [a.participant_id for a in after.included] == ["p1", "p2"]
        assert after.missing == []  # p3 still answers, but nobody expects or accepts it

    dlq = await read_topic(settings, settings.topic_names.dlq, min_records=1)
    assert {dict(r.headers)["error"] for r in dlq} == {b"bad_signature", b"unknown_participant"}

    async with Auditor(settings, merit=False) as auditor:
        report = await auditor.run()
    kinds = report.by_kind()
    assert kinds.pop("unsigned_registry_record") == 5  # hijack, 3 sybils, the tombstone
    assert kinds.pop("forged_registry_record") == 1  # the admission of p3 by a fake operator
    assert kinds == {}, [d.line() for d in report.discrepancies]


async def test_a_replayed_old_admission_is_stale(topics: Settings) -> None:
    """Replaying the operator's first (signed) admission to undo a rotation is refused."""
    settings, operator = operator_settings(topics)
    hand = HandParticipant(settings, "h1")
    await publish(settings, _entry("h1", hand.key), operator)
    await asyncio.sleep(0.01)
    await publish(settings, _entry("h1", Ed25519PrivateKey.generate()), operator)  # rotation
    first = (await read_topic(settings, settings.topic_names.registry, min_records=2))[0]
    await hand.produce_raw(settings.topic_names.registry, first.value, key="h1",
                           hdrs=headers(Participant))
    view = RegistryView(settings)
    await view.start()
    try:
        assert view.refused == {"stale": 1}
        assert view.participants["h1"].public_key != public_key_bytes(hand.key)
    finally:
        await view.stop()
    async with Auditor(settings, merit=False) as auditor:
        report = await auditor.run()
    assert report.by_kind() == {"stale_registry_record": 1}


async def _tombstone(settings: Settings, key: str) -> None:
    from fi_stream.kafka import make_producer

    producer = make_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic_names.registry, None, key=key.encode())
    finally:
        await producer.stop()
