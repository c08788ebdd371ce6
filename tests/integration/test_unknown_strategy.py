"""A query naming a strategy the aggregator does not run is rejected, with a reason that
reaches the client (QueryClient and `fi-stream query`), on the real broker (issue 15)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from fi_stream.models import load_digits_split
from fi_stream.settings import Settings
from producers.query_client import QueryClient, QueryRejectedError

from .harness import federation, read_topic, response_batches

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]
X = load_digits_split().x_test


async def test_unknown_strategy_is_rejected_with_its_reason_never_substituted(
        topics: Settings, model_dirs: dict[str, Path]) -> None:
    """Before: the aggregator answered `best_vote` with soft_vote and a log line."""
    two = dict(list(model_dirs.items())[:2])
    async with federation(topics, two) as fed:
        spent = {pid: p.ledger.answers for pid, p in fed.participants.items()}
        async with QueryClient(topics, strategy="best_vote") as client:
            with pytest.raises(QueryRejectedError, match="unknown_strategy") as caught:
                await client.infer(X[0], deadline_ms=20_000)
        result = caught.value.result
        assert result.status == "rejected" and result.included == []
        assert "'best_vote'" in (result.reason or "") and "soft_vote" in (result.reason or "")

        env = {k: v for k, v in os.environ.items() if not k.startswith("FI_")}
        env.update(PYTHONPATH=str(ROOT), FI_KAFKA__BOOTSTRAP=topics.kafka.bootstrap or "",
                   FI_KAFKA__TOPIC_PREFIX=topics.kafka.topic_prefix)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fi_stream_cli", "query", "--strategy", "best_vote",
            "--deadline-ms", "20000", env=env, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
        assert proc.returncode == 5, err.decode()
        assert '"status": "rejected"' in out.decode()
        last = err.decode().strip().splitlines()[-1]
        assert last.startswith("error: query ") and "unknown_strategy" in last, err.decode()

        await asyncio.sleep(1.0)  # the participants' declines
        assert {pid: p.ledger.answers - spent[pid] for pid, p in fed.participants.items()} \
            == dict.fromkeys(fed.participants, 0)  # no privacy spent on either query
    declines = [d for b in response_batches(
        await read_topic(topics, topics.topic_names.responses)) for d in b.declined]
    assert len(declines) == 4  # 2 queries x 2 participants
    assert all((d.detail or "").startswith("unknown_strategy") for d in declines)
