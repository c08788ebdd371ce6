"""The walking skeleton on a real broker: round trip, expiry, partial results, DLQ, dedupe."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fi_stream.clock import now_ms
from fi_stream.models import load_digits_split
from fi_stream.settings import Settings
from producers.query_client import QueryClient
from schemas.blocks import QueryBlockHeader, block_headers

from .harness import HandParticipant, federation, query_value, read_topic, registered, results_in

pytestmark = pytest.mark.kafka

X = load_digits_split().x_test


async def test_round_trip_completes_before_the_deadline(
        topics: Settings, model_dirs: dict[str, Path]) -> None:
    async with federation(topics, model_dirs), QueryClient(topics, quorum=2) as client:
        result = await client.infer(X[0], deadline_ms=20_000)
    assert result.status == "complete"
    assert [a.participant_id for a in result.included] == ["p1", "p2", "p3"]
    assert result.missing == [] and result.late == []
    assert result.completed_at_ms < result.deadline_ms  # emitted once all answered
    assert result.aggregate is not None and result.aggregate.shape == (10,)
    assert result.prediction == int(np.argmax(result.aggregate.to_numpy()))


async def test_two_clients_each_get_their_own_results(
        topics: Settings, model_dirs: dict[str, Path]) -> None:
    async with (federation(topics, model_dirs), QueryClient(topics, client_id="a") as a,
                QueryClient(topics, client_id="b") as b):
        got = await asyncio.gather(*(c.infer(X[i], deadline_ms=20_000)
                                     for i, c in enumerate((a, b, a, b))))
    assert [r.status for r in got] == ["complete"] * 4
    assert len({r.query_id for r in got}) == 4
    assert not a._waiters and not b._waiters


async def test_expired_query_is_skipped_and_insufficient(
        topics: Settings, model_dirs: dict[str, Path]) -> None:
    async with federation(topics, model_dirs) as fed, QueryClient(topics) as client:
        spent = {pid: p.ledger.answers for pid, p in fed.participants.items()}
        result = await client.infer(X[1], deadline_ms=-1_000)  # already past its deadline
        await asyncio.sleep(0.5)
        assert {pid: p.ledger.answers for pid, p in fed.participants.items()} == spent
    assert result.status == "insufficient"
    assert result.included == [] and result.aggregate is None


async def test_stopped_participant_gives_partial_result_naming_it(
        topics: Settings, model_dirs: dict[str, Path]) -> None:
    async with federation(topics, model_dirs) as fed, QueryClient(topics, quorum=2) as client:
        await fed.participants["p3"].stop()
        result = await client.infer(X[2], deadline_ms=2_000)
    assert result.status == "partial"
    assert result.missing == ["p3"]
    assert [a.participant_id for a in result.included] == ["p1", "p2"]
    assert result.completed_at_ms >= result.deadline_ms


async def test_malformed_record_goes_to_dlq_and_consumers_go_on(
        topics: Settings, model_dirs: dict[str, Path]) -> None:
    hand = HandParticipant(topics, "nobody")
    await hand.produce_raw(topics.topic_names.queries, b"\x00 not an event", key="junk")
    async with federation(topics, model_dirs), QueryClient(topics) as client:
        result = await client.infer(X[3], deadline_ms=20_000)
    assert result.status == "complete"
    dead = await read_topic(topics, topics.topic_names.dlq, min_records=4)
    consumers = {dict(r.headers)["consumer"].decode() for r in dead}
    assert all(dict(r.headers)["error"] == b"malformed" for r in dead)
    assert all(r.value == b"\x00 not an event" for r in dead)
    prefix = topics.kafka.topic_prefix
    assert consumers >= {f"{prefix}fi.participant.{p}" for p in ("p1", "p2", "p3")}
    assert any(c.endswith("fi.aggregator") for c in consumers)


async def test_duplicate_response_counts_once_and_forgeries_change_nothing(
        topics: Settings) -> None:
    t = topics.topic_names
    p1, p2 = HandParticipant(topics, "h1"), HandParticipant(topics, "h2")
    await p1.register()
    await p2.register()
    await registered(topics, {"h1", "h2"})
    async with federation(topics, {}) as fed:
        await fed.aggregator.registry.wait_for({"h1", "h2"}, timeout=20)
        now = now_ms()
        query = query_value("dup-1", X[4], created_at_ms=now, deadline_ms=now + 60_000,
                            quorum=2)
        await p1.produce_raw(t.queries, query, key="dup-1", partition=0,
                             hdrs=block_headers(QueryBlockHeader))
        answer = p1.batch(0, {"dup-1.0": 3})
        await p1.produce_raw(t.responses, answer, key="h1", partition=0)
        await p1.produce_raw(t.responses, answer, key="h1", partition=0)  # redelivery
        forged = p2.batch(0, {"dup-1.0": 7}, key=HandParticipant(topics, "x").key)
        await p1.produce_raw(t.responses, forged, key="h2", partition=0)  # not h2's key
        await p2.produce_raw(t.responses, p2.batch(0, {"dup-1.0": 3}), key="h2", partition=0)
        [record] = await read_topic(topics, t.results, min_records=1)
        [result] = results_in([record])
        assert fed.aggregator.join.duplicates == 1
    assert result.status == "complete" and result.prediction == 3
    assert [(a.participant_id, a.offset) for a in result.included] == [("h1", 0), ("h2", 3)]
    dead = await read_topic(topics, t.dlq, min_records=1)
    assert [dict(r.headers)["error"] for r in dead] == [b"bad_signature"]


async def test_naive_baseline_answers_every_query_one_batch_each(
        settings_factory: Callable[..., Settings], model_dirs: dict[str, Path]) -> None:
    """The unbatched pipeline `bench e2e` compares against is a working participant too."""
    from fi_stream.kafka import ensure_topics

    settings = settings_factory(participant={"pipeline": "naive", "max_batch": 1,
                                             "max_wait_ms": 0})
    await ensure_topics(settings)
    async with federation(settings, model_dirs) as fed, \
            QueryClient(settings, quorum=3) as client:
        results = await asyncio.gather(*(client.infer(x, deadline_ms=20_000) for x in X[:12]))
        assert {type(p).__name__ for p in fed.participants.values()} == {
            "NaiveParticipantService"}
        assert all(p.batches == 12 for p in fed.participants.values())  # one per block of one
    assert [r.status for r in results] == ["complete"] * 12
