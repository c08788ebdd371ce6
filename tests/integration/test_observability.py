"""What operators read tells the truth, on the real broker (issue 15): the ledger's count
after clean stops equals the audit's, and the services' metrics registries carry the
per-participant outcome counters, consumer lag and `_total` counter names."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from consumers.auditor import Auditor
from consumers.merit import MeritService
from fi_stream.models import load_digits_split
from fi_stream.settings import Settings
from producers.query_client import QueryClient

from .harness import federation

pytestmark = pytest.mark.kafka

X = load_digits_split().x_test


def scrape(registry: CollectorRegistry) -> dict[str, list[tuple[dict[str, str], float]]]:
    """What Prometheus would read: sample name → [(labels, value)]."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def counter_names(registry: CollectorRegistry) -> list[str]:
    return [s.name for family in text_string_to_metric_families(
        generate_latest(registry).decode()) if family.type == "counter"
        for s in family.samples if not s.name.endswith("_created")]


async def test_ledgers_equal_the_audit_after_clean_stops_and_metrics_count_each_outcome(
        topics: Settings, model_dirs: dict[str, Path], tmp_path: Path) -> None:
    """Before: each clean stop kept the 1,024-answer reservation on file, so after two runs
    the ledger said 2,000+ answers where the audit counted 9; duplicates were a gauge
    without `_total`; no per-participant counters or lag existed."""
    dirs = {}
    for pid in ("p1", "p2"):  # fresh ledgers (the session's model dirs are shared)
        dirs[pid] = tmp_path / pid
        shutil.copytree(model_dirs[pid], dirs[pid], ignore=shutil.ignore_patterns("privacy_*"))
    async with federation(topics, dirs), QueryClient(topics) as client:
        for i in range(5):
            assert (await client.infer(X[i], deadline_ms=20_000)).status == "complete"
    async with federation(topics, dirs) as fed, QueryClient(topics) as client:
        for i in range(5, 9):
            assert (await client.infer(X[i], deadline_ms=20_000)).status == "complete"
        agg = scrape(fed.aggregator.metrics_registry)
        part = scrape(fed.participants["p1"].metrics_registry)
        agg_counters = counter_names(fed.aggregator.metrics_registry)
        part_counters = counter_names(fed.participants["p1"].metrics_registry)
    async with federation(topics, dirs, with_aggregator=False) as fed:
        # A new run reads the files: what they count as spent, before any answer.
        on_file = {pid: p.ledger.answers for pid, p in fed.participants.items()}
    report = await Auditor(topics, merit=False).run()
    assert report.ok, [d.line() for d in report.discrepancies]
    audited = {s.participant_id: s.answers for s in report.spend}
    assert on_file == audited == {"p1": 9, "p2": 9}

    outcomes = {(labels["participant"], labels["outcome"]): v
                for labels, v in agg["fi_aggregator_participant_queries_total"]}
    assert outcomes == {("p1", "answered"): 4.0, ("p2", "answered"): 4.0}
    assert agg["fi_aggregator_duplicates_total"] == [({}, 0.0)]
    assert all(name.endswith("_total") for name in agg_counters + part_counters), \
        agg_counters + part_counters
    # Lag: every input partition the service reads, caught up by the time it answered.
    assert {(lb["topic"], lb["partition"]) for lb, _ in agg["fi_consumer_lag_records"]} == {
        (t, str(p)) for t in (topics.topic_names.queries, topics.topic_names.responses)
        for p in range(topics.kafka.partitions)}
    assert {lb["topic"] for lb, _ in part["fi_consumer_lag_records"]} == {
        topics.topic_names.queries}
    assert all(v >= 0 for _, v in agg["fi_consumer_lag_records"] + part["fi_consumer_lag_records"])


async def test_merit_shows_its_lag(topics: Settings) -> None:
    merit = MeritService(topics)
    await merit.start()
    try:
        merit._lag.update(merit._reader, force=True)  # type: ignore[arg-type]
        lags = scrape(merit.metrics_registry)["fi_consumer_lag_records"]
    finally:
        await merit.stop()
    assert {lb["topic"] for lb, _ in lags} >= {topics.topic_names.results,
                                               topics.topic_names.feedback}
    assert all(v == 0 for _, v in lags)
