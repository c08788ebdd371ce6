"""Merit-based incentives from labels on the real broker: every labeled window is scored
once (also across a restart of the scorer), and the Shapley values add up to the
ensemble's accuracy on the window (the efficiency axiom, on live data)."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from consumers.auditor import Auditor
from consumers.merit import MeritService
from fi_stream.kafka import ensure_topics
from fi_stream.models import load_digits_split
from fi_stream.settings import Settings
from producers.feedback import publish_labels
from producers.query_client import QueryClient
from schemas import Incentive, decode

from .harness import federation, read_topic, results_in

pytestmark = pytest.mark.kafka

SPLIT = load_digits_split()


async def test_labeled_windows_get_shapley_incentives_exactly_once(
        settings_factory: Callable[..., Settings], model_dirs: dict[str, Path]) -> None:
    settings = settings_factory(aggregator={"window_results": 4, "window_seconds": 0.5})
    await ensure_topics(settings)
    labels: dict[str, int] = {}
    async with federation(settings, model_dirs), QueryClient(settings) as client:
        async for i, query, _ in client.stream(SPLIT.x_test[:12], deadline_ms=20_000):
            labels[query.query_id] = int(SPLIT.y_test[i])
        await publish_labels(settings, labels)
        label_free = [decode(r.value, Incentive) for r in
                      await read_topic(settings, settings.topic_names.incentives,
                                       min_records=1)]
    windows = {(i.window.partition, i.window.seq) for i in label_free}

    async with MeritService(settings, label_wait_s=60, interval_s=0.2) as merit:
        await merit.wait_scored(windows, timeout=30)
    async with MeritService(settings, label_wait_s=60, interval_s=0.2) as again:
        await asyncio.sleep(1.0)
        assert again.emitted == 0  # a restart rebuilds what was scored from the log

    incentives = [decode(r.value, Incentive) for r in
                  await read_topic(settings, settings.topic_names.incentives)]
    shapley = [i for i in incentives if i.method == "shapley"]
    keys = Counter((i.window.partition, i.window.seq, i.participant_id) for i in shapley)
    assert set(keys.values()) == {1}
    assert {(p, s) for p, s, _ in keys} == windows

    results = results_in(await read_topic(settings, settings.topic_names.results))
    correct: dict[tuple[int, int], list[bool]] = defaultdict(list)
    for r in results:
        if r.query_id in labels and r.included:
            correct[(r.window.partition, r.window.seq)].append(r.prediction == labels[r.query_id])
    by_window: dict[tuple[int, int], list[Incentive]] = defaultdict(list)
    for i in shapley:
        by_window[(i.window.partition, i.window.seq)].append(i)
    report = await Auditor(settings, merit=False).run()
    assert report.ok, [d.line() for d in report.discrepancies]
    assert report.counts["merit_incentives"] == len(shapley)
    for key, events in by_window.items():
        accuracy = sum(correct[key]) / len(correct[key])
        assert sum(e.score for e in events) == pytest.approx(accuracy)
        assert all(e.labeled == len(correct[key]) for e in events)
        assert all(e.skill_fairness is None or 0 <= e.skill_fairness <= 1 for e in events)
