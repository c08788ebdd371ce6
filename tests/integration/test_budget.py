"""Privacy budgets hold on the real broker: answer what fits, decline the rest, never
overspend, and a restart does not reset the spend."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from fi_stream.kafka import ensure_topics
from fi_stream.models import load_digits_split
from fi_stream.privacy import Mechanism, epsilon_spent
from fi_stream.settings import Settings
from producers.query_client import QueryClient

from .harness import federation, read_topic, response_batches

pytestmark = pytest.mark.kafka

X = load_digits_split().x_test
CAP = 10


async def test_exhausted_budget_declines_and_survives_a_restart(
        settings_factory: Callable[..., Settings], model_dirs: dict[str, Path],
        tmp_path: Path) -> None:
    sigma, delta = 0.3, 1e-5
    settings = settings_factory(privacy={"noise_multiplier": sigma, "delta": delta,
                                         "epsilon_max": epsilon_spent(
                                             CAP, Mechanism(noise_multiplier=sigma), delta)})
    await ensure_topics(settings)
    model = tmp_path / "p1"
    shutil.copytree(model_dirs["p1"], model, ignore=shutil.ignore_patterns("privacy_*"))

    async with federation(settings, {"p1": model}), QueryClient(settings) as client:
        first = [await client.infer(X[i], deadline_ms=20_000) for i in range(6)]
    # A new process: the ledger on disk, not memory, carries the spend.
    async with federation(settings, {"p1": model}) as fed, QueryClient(settings) as client:
        second = [await client.infer(X[i], deadline_ms=20_000) for i in range(6, 14)]
        assert fed.participants["p1"].ledger.answers == CAP

    statuses = [r.status for r in first + second]
    assert statuses == ["complete"] * CAP + ["insufficient"] * 4
    for r in second[4:]:
        assert [d.reason for d in r.declined] == ["budget_exhausted"]
        assert r.completed_at_ms < r.deadline_ms  # the aggregator did not wait for p1
    batches = response_batches(await read_topic(settings, settings.topic_names.responses))
    assert sum(len(b.answered) for b in batches) == CAP
