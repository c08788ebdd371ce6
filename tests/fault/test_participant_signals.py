"""A participant process stopped by SIGTERM mid-stream exits 0 after finishing what it
holds; after a restart nothing is lost (at-least-once), and a SIGKILLed one loses nothing
either."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fi_stream.clock import now_ms
from fi_stream.kafka import make_producer
from fi_stream.service_env import service_env
from fi_stream.settings import Settings
from schemas.blocks import QueryBlockHeader, block_headers
from tests.integration.harness import query_value, read_topic, registered, response_batches

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

N = 3000


async def _participant(settings: Settings, model: Path, log: Path, children: list[Any]
                       ) -> asyncio.subprocess.Process:
    env = dict(service_env(settings), FI_PARTICIPANT__MAX_BATCH="32")
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fi_stream_cli", "participant", "run", "--id", "p1",
            "--model", str(model), env=env, stdout=out, stderr=out,
            stdin=asyncio.subprocess.DEVNULL)
    children.append(proc)
    return proc


async def _queries(settings: Settings) -> None:
    producer = make_producer(settings)
    await producer.start()
    rng = np.random.default_rng(0)
    try:
        for i in range(N):  # blocks of one: the signal lands between many records
            now = now_ms()
            value = query_value(f"q{i}", rng.random(64, dtype=np.float32), created_at_ms=now,
                                deadline_ms=now + 240_000)
            await producer.send(settings.topic_names.queries, value, key=f"q{i}".encode(),
                                headers=block_headers(QueryBlockHeader))
            if i % 100 == 0:
                await asyncio.sleep(0.05)
        await producer.flush()
    finally:
        await producer.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_stopped_participant_loses_no_query(
        topics: Settings, model_dirs: dict[str, Path], tmp_path: Path, sig: int,
        children: list[Any]) -> None:
    log = tmp_path / "p1.log"
    proc = await _participant(topics, model_dirs["p1"], log, children)
    await registered(topics, {"p1"})
    sending = asyncio.create_task(_queries(topics))
    await asyncio.sleep(1.5)
    proc.send_signal(sig)
    code = await asyncio.wait_for(proc.wait(), 30)
    if sig == signal.SIGTERM:
        assert code == 0, log.read_text()[-3000:]
        assert "participant_stopped" in log.read_text()
    proc = await _participant(topics, model_dirs["p1"], log, children)
    await sending
    try:
        async with asyncio.timeout(90):
            while True:
                batches = response_batches(
                    await read_topic(topics, topics.topic_names.responses))
                answered = {q for b in batches for q in b.answered}
                if len(answered) == N:
                    break
                await asyncio.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    assert answered == {f"q{i}.0" for i in range(N)}
