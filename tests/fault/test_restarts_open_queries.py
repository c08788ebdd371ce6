"""Exactly-once across restarts while queries stay open (issue 12, defect 2).

One registered participant is down, so every query waits for its deadline; one query has a
long deadline and pins its partition's committed offset the whole time, so every restart
re-reads it and everything after it. The aggregator is stopped again and again (SIGTERM
and SIGKILL) while results are emitted in between. A read_committed reader must then find
exactly one result per query: 0 lost, 0 duplicated. Before the fix of the resume mark the
second restart re-emitted every result emitted since the first.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fi_stream.clock import now_ms
from fi_stream.kafka import make_producer
from fi_stream.settings import Settings
from schemas.blocks import QueryBlockHeader, block_headers
from tests.fault.test_aggregator_crash import _spawn_aggregator, _until_started
from tests.integration.harness import (
    HandParticipant,
    query_value,
    read_topic,
    registered,
    results_in,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

UP = ("h1", "h2")  # h3 is registered but down
LONG_DEADLINE_MS = 45_000
SHORT_DEADLINE_MS = 1_500
RESTARTS = (signal.SIGTERM, signal.SIGKILL, signal.SIGTERM, signal.SIGKILL)


async def _send_round(settings: Settings, hands: list[HandParticipant], round_: int,
                      deadline_ms: int, n: int = 6) -> list[str]:
    """`n` queries on both partitions, answered by the participants that are up."""
    t = settings.topic_names
    producer = make_producer(settings)
    await producer.start()
    qids = [f"r{round_}-q{i}.0" for i in range(n)]
    try:
        by_partition: dict[int, list[str]] = {0: [], 1: []}
        for i, qid in enumerate(qids):
            now = now_ms()
            block_id = qid.removesuffix(".0")
            value = query_value(block_id, np.full(64, 0.5, np.float32), created_at_ms=now,
                                deadline_ms=now + deadline_ms, quorum=2)
            await producer.send(t.queries, value, key=block_id.encode(), partition=i % 2,
                                headers=block_headers(QueryBlockHeader))
            by_partition[i % 2].append(qid)
        for hand in hands:
            for partition, ids in by_partition.items():
                await producer.send(t.responses,
                                    hand.batch(partition, {q: 1 for q in ids}),
                                    key=hand.participant_id.encode(), partition=partition)
        await producer.flush()
    finally:
        await producer.stop()
    return qids


async def _send_raw(settings: Settings, partition: int, qid: str, value: bytes) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic_names.queries, value, key=qid.encode(),
                                     partition=partition)
    finally:
        await producer.stop()


async def test_restarts_with_open_queries_emit_every_result_exactly_once(
        topics: Settings, tmp_path: Path, children: list[Any]) -> None:
    hands = [HandParticipant(topics, pid) for pid in (*UP, "h3")]
    for hand in hands:
        await hand.register()
    await registered(topics, {"h1", "h2", "h3"})
    up = hands[:2]
    log = tmp_path / "aggregator.log"
    proc = await _spawn_aggregator(topics, log, children)
    await _until_started(log, 1)

    expected = await _send_round(topics, up, 0, LONG_DEADLINE_MS, n=2)  # pins both partitions
    now = now_ms()
    unserved = query_value("unserved", np.zeros(64, np.float32), task="no-such-task",
                           created_at_ms=now, deadline_ms=now + LONG_DEADLINE_MS)
    await _send_raw(topics, 0, "unserved", unserved)
    # A block whose header breaks the contract (quorum 0) but whose id and size read.
    invalid = query_value("invalid", np.zeros(64, np.float32), created_at_ms=now,
                          deadline_ms=now + LONG_DEADLINE_MS)
    assert b'"quorum":1' in invalid
    await _send_raw(topics, 1, "invalid", invalid.replace(b'"quorum":1', b'"quorum":0'))
    expected += ["unserved.0", "invalid.0"]
    for i, sig in enumerate(RESTARTS, start=1):
        expected += await _send_round(topics, up, i, SHORT_DEADLINE_MS)
        await asyncio.sleep(SHORT_DEADLINE_MS / 1000 + 2.5)  # their results go out
        proc.send_signal(sig)
        await asyncio.wait_for(proc.wait(), 30)
        proc = await _spawn_aggregator(topics, log, children)
        await _until_started(log, i + 1)
    expected += await _send_round(topics, up, len(RESTARTS) + 1, SHORT_DEADLINE_MS)
    try:
        records = await read_topic(topics, topics.topic_names.results,
                                   min_records=len(expected), timeout=LONG_DEADLINE_MS / 1000 + 30)
        await asyncio.sleep(3.0)  # anything emitted twice would be here by now
        records = await read_topic(topics, topics.topic_names.results)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0, log.read_text()[-3000:]

    results = results_in(records)
    counts = Counter(r.query_id for r in results)
    lost = set(expected) - counts.keys()
    duplicated = {q: n for q, n in counts.items() if n > 1}
    assert not lost and not duplicated, (sorted(lost), duplicated)
    assert counts.keys() == set(expected)
    by_id = {r.query_id: r for r in results}
    assert by_id["unserved.0"].status == "insufficient" and "no registered participant" in (
        by_id["unserved.0"].reason or "")
    assert by_id["unserved.0"].completed_at_ms < by_id["unserved.0"].deadline_ms  # at once
    assert by_id["invalid.0"].status == "rejected" and by_id["invalid.0"].reason
    assert {by_id[q].status for q in expected[:2]} == {"partial"}
    assert all(by_id[q].missing == ["h3"] for q in expected if q.startswith("r"))
