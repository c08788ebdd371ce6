"""The budget in Kafka on the real broker: deleting the ledger file does not reset the
spend, and two processes of one participant share one budget."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from consumers.participant import ParticipantService, make_participant
from fi_stream.kafka import ensure_topics
from fi_stream.ledger import LEDGER_FILE
from fi_stream.models import load_digits_split
from fi_stream.privacy import Mechanism, epsilon_spent
from fi_stream.settings import Settings
from fi_stream.signing import PRIVATE_KEY_FILE, load_or_create_key
from producers.query_client import QueryClient

from .harness import federation, read_topic, response_batches

pytestmark = pytest.mark.kafka

X = load_digits_split().x_test
CAP = 20


def _budget(settings_factory: Callable[..., Settings]) -> Settings:
    sigma, delta = 0.3, 1e-5
    eps = epsilon_spent(CAP, Mechanism(noise_multiplier=sigma), delta)
    return settings_factory(privacy={"noise_multiplier": sigma, "delta": delta,
                                     "epsilon_max": eps,
                                     "reserve_ahead": 1})


def _copy(model_dirs: dict[str, Path], to: Path) -> Path:
    load_or_create_key(model_dirs["p1"] / PRIVATE_KEY_FILE)  # both copies sign as one p1
    shutil.copytree(model_dirs["p1"], to, ignore=shutil.ignore_patterns("privacy_*",
                                                                         "client_quota*"))
    return to


async def test_a_deleted_ledger_does_not_reset_the_spend(
        settings_factory: Callable[..., Settings], model_dirs: dict[str, Path],
        tmp_path: Path) -> None:
    settings = _budget(settings_factory)
    await ensure_topics(settings)
    model = _copy(model_dirs, tmp_path / "p1")
    async with federation(settings, {"p1": model}), QueryClient(settings) as client:
        first = [await client.infer(X[i], deadline_ms=20_000) for i in range(6)]
    (model / LEDGER_FILE).unlink()  # while the participant is stopped
    async with federation(settings, {"p1": model}) as fed, QueryClient(settings) as client:
        assert fed.participants["p1"].ledger.answers >= 6
        second = [await client.infer(X[i], deadline_ms=20_000) for i in range(6, CAP + 2)]
    statuses = [r.status for r in first + second]
    assert statuses.count("complete") <= CAP
    assert statuses[:6] == ["complete"] * 6 and statuses[-2:] == ["insufficient"] * 2


async def _both_assigned(a: ParticipantService, b: ParticipantService, partitions: int,
                         timeout_s: float = 30.0) -> None:
    """Until the group's rebalance settled: each process holds some of the partitions
    (queries sent earlier may all go to the first one, which then spends the budget alone)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        held = [p._consumer.assignment() if p._consumer is not None else set() for p in (a, b)]
        if all(held) and len(held[0] | held[1]) == partitions:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the two processes did not share the partitions: {held}")


async def test_two_processes_share_one_budget(
        settings_factory: Callable[..., Settings], model_dirs: dict[str, Path],
        tmp_path: Path) -> None:
    """Two instances of p1 (own directories, same key, one consumer group) split the
    queries' partitions; together they answer exactly the budget, never more.

    Queries are first sent one at a time until both processes have answered one (which of
    them answers a query is its partition's, by a hash of a random id: the budget is not at
    stake yet), then a burst larger than what is left races the two for the rest."""
    settings = _budget(settings_factory)
    await ensure_topics(settings)
    a = make_participant(settings, participant_id="p1", model_dir=_copy(model_dirs,
                                                                         tmp_path / "a"))
    b = make_participant(settings, participant_id="p1", model_dir=_copy(model_dirs,
                                                                         tmp_path / "b"))
    await a.start()
    await b.start()
    got = []
    try:
        async with federation(settings, {}) as fed, QueryClient(settings) as client:
            await fed.aggregator.registry.wait_for({"p1"}, timeout=30)
            await _both_assigned(a, b, settings.kafka.partitions)
            while not (a.answered and b.answered) and len(got) < CAP - 1:
                got.append(await client.infer(X[len(got)], deadline_ms=30_000))
            got += await asyncio.gather(*(client.infer(X[i], deadline_ms=30_000)
                                          for i in range(len(got), CAP + 6)))
    finally:
        await a.stop()
        await b.stop()
    assert a.answered > 0 and b.answered > 0, f"both took part: {a.answered}, {b.answered}"
    assert a.answered + b.answered == CAP
    assert sorted(r.status for r in got).count("complete") == CAP
    batches = response_batches(await read_topic(settings, settings.topic_names.responses))
    assert sum(len(x.answered) for x in batches) == CAP
