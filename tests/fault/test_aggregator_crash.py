"""Exactly-once under crashes: SIGKILL the aggregator process mid-stream, restart it, and
check that a read_committed reader sees every result exactly once, equal to what the
recorded responses determine."""

from __future__ import annotations

import asyncio
import random
import re
import signal
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fi_stream.aggregation import aggregate
from fi_stream.clock import now_ms
from fi_stream.kafka import make_producer
from fi_stream.service_env import service_env
from fi_stream.settings import Settings
from schemas import Incentive, decode
from schemas.blocks import QueryBlockHeader, block_headers
from tests.integration.harness import (
    HandParticipant,
    query_value,
    read_results,
    read_topic,
    registered,
    response_batches,
    results_in,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

N_QUERIES = 5000
CHUNK = 250
PARTICIPANTS = ("h1", "h2", "h3")


async def _spawn_aggregator(settings: Settings, log: Path, children: list[Any],
                            instance: str = "crash") -> asyncio.subprocess.Process:
    env = dict(service_env(settings), FI_AGGREGATOR__WINDOW_RESULTS="500",
               FI_AGGREGATOR__WINDOW_SECONDS="1")
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fi_stream_cli", "aggregator", "run", "--instance-id", instance,
            env=env, stdout=out, stderr=out, stdin=asyncio.subprocess.DEVNULL)
    children.append(proc)
    return proc


async def _until_started(log: Path, count: int) -> None:
    """Wait until the aggregator process has logged its `count`-th start."""
    async with asyncio.timeout(60):
        while log.read_text().count("aggregator_started") < count:
            await asyncio.sleep(0.05)


async def _stream(settings: Settings, hands: list[HandParticipant], rng: np.random.Generator,
                  pause: float = 0.5, after_chunk: Callable[[int], None] | None = None) -> None:
    """Queries and every participant's answers, chunk by chunk, as a live system would;
    `after_chunk(i)` runs the moment chunk `i` is on the broker."""
    t = settings.topic_names
    producer = make_producer(settings)
    await producer.start()
    try:
        for start in range(0, N_QUERIES, CHUNK):
            # Blocks of 1 to 50 queries, alternating partitions: a SIGKILL lands between
            # and within blocks' rows being settled.
            by_partition: dict[int, list[str]] = {0: [], 1: []}
            i = start
            while i < start + CHUNK:
                n = min(int(rng.integers(1, 51)), start + CHUNK - i)
                block_id, partition = f"b{i:05d}", (i // 7) % 2
                now = now_ms()
                value = query_value(block_id, rng.random((n, 64), dtype=np.float32),
                                    created_at_ms=now, deadline_ms=now + 240_000, quorum=3)
                await producer.send(t.queries, value, key=block_id.encode(),
                                    partition=partition,
                                    headers=block_headers(QueryBlockHeader))
                by_partition[partition] += [f"{block_id}.{r}" for r in range(n)]
                i += n
            for hand in hands:
                for partition, qids in by_partition.items():
                    answers = {q: int(rng.integers(10)) for q in qids}
                    await producer.send(t.responses, hand.batch(partition, answers),
                                        key=hand.participant_id.encode(), partition=partition)
            await producer.flush()
            if after_chunk is not None:
                after_chunk(start // CHUNK)
            await asyncio.sleep(pause)
    finally:
        await producer.stop()


async def test_sigkill_three_times_yields_every_result_exactly_once(
        topics: Settings, tmp_path: Path, children: list[Any]) -> None:
    hands = [HandParticipant(topics, pid) for pid in PARTICIPANTS]
    for hand in hands:
        await hand.register()
    await registered(topics, set(PARTICIPANTS))
    rng = np.random.default_rng(0)
    log = tmp_path / "aggregator.log"
    proc = await _spawn_aggregator(topics, log, children)
    streaming = asyncio.create_task(_stream(topics, hands, rng))
    kills = 0
    moments = random.Random(1)
    done = 0
    for started in range(1, 4):
        await _until_started(log, started)
        # Each incarnation commits results before it dies (else no kill would test resuming
        # from committed state), then is killed at a random moment while it works.
        done = len(await read_results(topics, min_results=min(done + 100, N_QUERIES),
                                      timeout=120))
        await asyncio.sleep(moments.uniform(0.1, 1.5))
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        kills += 1
        proc = await _spawn_aggregator(topics, log, children)
    await streaming
    await _until_started(log, 4)  # its SIGTERM below must find it running, not importing
    try:
        await read_results(topics, min_results=N_QUERIES, timeout=120)
        await asyncio.sleep(2.5)  # let the last incentive windows close (1 s) and commit
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0, log.read_text()[-3000:]
    assert kills == 3
    assert log.read_text().count("aggregator_started") == 4
    # A restart resumed from committed state with results already emitted past its mark
    # (the ones it must not emit again).
    assert re.search(r'"results_seen": [1-9]', log.read_text()), "no resume was tested"

    await _check_exactly_once(topics)


@pytest.mark.parametrize("leave", [signal.SIGTERM, signal.SIGKILL], ids=["stop", "kill"])
async def test_two_aggregators_share_the_work_and_survive_one_leaving(
        topics: Settings, tmp_path: Path, children: list[Any], leave: signal.Signals) -> None:
    """`a` leaves mid-stream: gracefully (it commits, the group rebalances at once) or
    killed (its partitions move after its session times out, and an open transaction of
    its, if any, must end before `b` reads their offsets)."""
    hands = [HandParticipant(topics, pid) for pid in PARTICIPANTS]
    for hand in hands:
        await hand.register()
    await registered(topics, set(PARTICIPANTS))
    a = await _spawn_aggregator(topics, tmp_path / "a.log", children, "a")
    b = await _spawn_aggregator(topics, tmp_path / "b.log", children, "b")
    await _until_started(tmp_path / "a.log", 1)
    await _until_started(tmp_path / "b.log", 1)
    streaming = asyncio.create_task(_stream(topics, hands, np.random.default_rng(1)))
    await asyncio.sleep(3.0)
    a.send_signal(leave)  # one member leaves mid-stream; b takes its partitions
    code = await asyncio.wait_for(a.wait(), 30)
    assert code == (0 if leave == signal.SIGTERM else -signal.SIGKILL), \
        (tmp_path / "a.log").read_text()[-3000:]
    await streaming
    try:
        await read_results(topics, min_results=N_QUERIES, timeout=120)
        await asyncio.sleep(2.5)
    finally:
        b.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(b.wait(), 30) == 0
    both = (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
    assert both.count("aggregator_started") == 2
    await _check_exactly_once(topics)


async def test_a_paused_member_that_wakes_up_late_duplicates_nothing(
        topics: Settings, tmp_path: Path, children: list[Any]) -> None:
    """A zombie: `a` freezes mid-stream (a long GC pause, a stalled VM), the group gives its
    partitions to `b` after the session timeout, and then `a` wakes up with results and
    offsets of partitions it no longer owns. The broker must refuse its transaction."""
    hands = [HandParticipant(topics, pid) for pid in PARTICIPANTS]
    for hand in hands:
        await hand.register()
    await registered(topics, set(PARTICIPANTS))
    a_log, b_log = tmp_path / "a.log", tmp_path / "b.log"
    a = await _spawn_aggregator(topics, a_log, children, "a")
    await _until_started(a_log, 1)
    # Frozen the moment a chunk is on the broker: `a` wakes up with it fetched, unprocessed.
    frozen = asyncio.Event()

    def freeze(chunk: int) -> None:
        if chunk == 3:
            a.send_signal(signal.SIGSTOP)
            frozen.set()

    streaming = asyncio.create_task(
        _stream(topics, hands, np.random.default_rng(2), pause=1.0, after_chunk=freeze))
    await frozen.wait()
    b = await _spawn_aggregator(topics, b_log, children, "b")
    async with asyncio.timeout(60):  # b owns a's partitions once a's session has expired
        while b_log.read_text().count("aggregator_resumed") < 2:
            await asyncio.sleep(0.1)
    await asyncio.sleep(2.0)  # b emits for a while
    a.send_signal(signal.SIGCONT)
    await streaming
    try:
        await read_results(topics, min_results=N_QUERIES, timeout=120)
        await asyncio.sleep(2.5)
    finally:
        for proc in (a, b):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        codes = [await asyncio.wait_for(proc.wait(), 30) for proc in (a, b)]
    assert codes == [0, 0], a_log.read_text()[-3000:] + b_log.read_text()[-3000:]
    await _check_exactly_once(topics)


async def _check_exactly_once(topics: Settings) -> None:
    results = results_in(await read_topic(topics, topics.topic_names.results))
    counts = Counter(r.query_id for r in results)
    assert len(counts) == N_QUERIES and set(counts.values()) == {1}, counts.most_common(3)

    # Equal to a recomputation from the recorded responses (what a crash-free run emits).
    records = await read_topic(topics, topics.topic_names.responses)
    responses = {(r.partition, r.offset): batch
                 for r, batch in zip(records, response_batches(records), strict=True)}
    for result in results:
        assert result.status == "complete"
        rows = np.stack([responses[(a.partition, a.offset)].outputs.to_numpy()[a.index]
                         for a in result.included]).astype(np.float64)
        assert [a.participant_id for a in result.included] == list(PARTICIPANTS)
        assert result.aggregate is not None
        assert result.aggregate.to_numpy().tobytes() == aggregate(rows).vector.tobytes()

    incentives = [decode(r.value, Incentive) for r in
                  await read_topic(topics, topics.topic_names.incentives)]
    keys = Counter((i.window.partition, i.window.seq, i.participant_id) for i in incentives)
    assert set(keys.values()) == {1}, "an incentive was emitted twice"
    windows = {(i.window.partition, i.window.seq): i.window.results for i in incentives}
    assert sum(windows.values()) == N_QUERIES
