"""No record stops the federation, on a real broker (issue 12, defects 1, 3, 8)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import numpy as np
import pytest

from consumers.aggregator import AggregatorService
from fi_stream.clock import now_ms
from fi_stream.models import load_digits_split
from fi_stream.settings import Settings
from producers.query_client import QueryClient, QueryRejectedError
from schemas.blocks import QueryBlockHeader, block_headers

from .harness import (
    HandParticipant,
    federation,
    query_value,
    read_topic,
    registered,
    response_batches,
    results_in,
)

pytestmark = pytest.mark.kafka

X = load_digits_split().x_test


async def test_a_query_of_3e38_is_rejected_and_declined_with_the_reason_then_all_goes_on(
        topics: Settings, model_dirs: dict[str, Path]) -> None:
    """Before: the participants signed NaN rows for it and the aggregator exited 1."""
    async with federation(topics, model_dirs) as fed, QueryClient(topics) as client:
        spent = {pid: p.ledger.answers for pid, p in fed.participants.items()}
        with pytest.raises(QueryRejectedError, match="above the task's maximum") as caught:
            await client.infer(np.full(64, 3e38, np.float32), deadline_ms=20_000)
        assert caught.value.result.status == "rejected"
        result = await client.infer(X[0], deadline_ms=20_000)
        assert result.status == "complete"
        await asyncio.sleep(1.0)  # the participants' declines of the rejected query
        assert {pid: p.ledger.answers - spent[pid] for pid, p in fed.participants.items()} \
            == dict.fromkeys(fed.participants, 1)  # no privacy spent on the rejected one
    declines = [d for b in response_batches(
        await read_topic(topics, topics.topic_names.responses)) for d in b.declined]
    assert len(declines) == 3
    assert all(d.reason == "bad_input" and "maximum" in (d.detail or "") for d in declines)


async def test_implausible_rows_of_a_registered_participant_are_excluded_not_fatal(
        topics: Settings) -> None:
    """Before: one NaN, Inf, wrong-width or 1e300 row stopped the aggregator for good (or,
    finite, decided every soft vote)."""
    hands = {pid: HandParticipant(topics, pid) for pid in ("h1", "h2", "h3")}
    for hand in hands.values():
        await hand.register()
    await registered(topics, set(hands))
    aggregator = AggregatorService(topics, instance_id=uuid.uuid4().hex[:6])
    await aggregator.start()
    try:
        now = now_ms()
        blocks = [f"q{i}" for i in range(4)]
        qids = [f"{b}.0" for b in blocks]
        for i, block_id in enumerate(blocks):
            value = query_value(block_id, X[i], created_at_ms=now, deadline_ms=now + 20_000)
            await hands["h1"].produce_raw(topics.topic_names.queries, value, key=block_id,
                                          partition=0, hdrs=block_headers(QueryBlockHeader))
        for pid in ("h1", "h2"):
            await hands[pid].produce_raw(topics.topic_names.responses,
                                         hands[pid].batch(0, dict.fromkeys(qids, 2)), key=pid,
                                         partition=0)
        bad = hands["h3"]
        rows = np.eye(10, dtype=np.float32)[[2, 2, 2, 2]]
        rows[0, 0], rows[1, 0], rows[2, 0], rows[3, 0] = np.nan, np.inf, 1e6, -3e38
        forged = bad.batch(0, dict.fromkeys(qids, 2), outputs=rows)  # signed by h3 itself
        await bad.produce_raw(topics.topic_names.responses, forged, key="h3", partition=0)
        records = await read_topic(topics, topics.topic_names.results, min_records=4)
    finally:
        await aggregator.stop()
    results = results_in(records)
    assert {r.query_id for r in results} == set(qids)
    for r in results:
        assert r.status == "partial" and r.prediction == 2
        assert [a.participant_id for a in r.included] == ["h1", "h2"]
        assert [(e.participant_id, e.reason) for e in r.excluded] in (
            [("h3", "non_finite")], [("h3", "implausible_norm")])
    dlq = await read_topic(topics, topics.topic_names.dlq, min_records=1)
    assert any(dict(r.headers).get("error") == b"implausible_answer" for r in dlq)
