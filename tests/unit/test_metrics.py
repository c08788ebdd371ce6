"""Metric names and values, scraped from the registries as Prometheus reads them."""

from __future__ import annotations

from aiokafka import TopicPartition
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from consumers.aggregator_metrics import AggregatorMetrics
from fi_stream.metrics import ConsumerLag, lag
from schemas import (
    CopiedAnswer,
    ExcludedAnswer,
    IncludedAnswer,
    ParticipantDecline,
    Result,
    WindowRef,
)


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(generate_latest(registry).decode())
            for s in f.samples}


@given(st.one_of(st.none(), st.integers(-1, 10**9)), st.one_of(st.none(), st.integers(0, 10**9)))
def test_lag_is_never_negative_and_unknown_when_an_end_is(end: int | None,
                                                           pos: int | None) -> None:
    value = lag(end, pos)
    if end is None or end < 0 or pos is None:
        assert value is None
    else:
        assert value == max(0, end - pos)


def test_consumer_lag_per_partition_and_gone_when_unassigned() -> None:
    registry = CollectorRegistry()
    gauge = ConsumerLag(registry)
    a, b = TopicPartition("fi.queries", 0), TopicPartition("fi.queries", 1)
    gauge.set([a, b], {a: 10, b: 7}.get, {a: 4, b: None}.get)
    got = samples(registry)
    assert got[("fi_consumer_lag_records", (("partition", "0"), ("topic", "fi.queries")))] == 6
    assert not any(k[1] == (("partition", "1"), ("topic", "fi.queries")) for k in got)
    gauge.set([b], {b: 7}.get, {b: 7}.get)  # a revoked, b known
    got = samples(registry)
    assert [k for k in got if k[0] == "fi_consumer_lag_records"] == [
        ("fi_consumer_lag_records", (("partition", "1"), ("topic", "fi.queries")))]


def test_aggregator_counts_each_participants_outcome_and_names_counters_total() -> None:
    registry = CollectorRegistry()
    m = AggregatorMetrics(registry)
    result = Result(
        query_id="q", task="digits", status="partial", strategy="soft_vote", quorum=1,
        created_at_ms=0, deadline_ms=1, completed_at_ms=1, window=WindowRef(partition=0, seq=0),
        included=[IncludedAnswer(participant_id="p1", partition=0, offset=0, index=0)],
        late=["p2"], missing=["p3"],
        declined=[ParticipantDecline(participant_id="p4", reason="expired")],
        excluded=[ExcludedAnswer(participant_id="p5", partition=0, offset=1, index=0,
                                 reason="non_finite")],
        copied=[CopiedAnswer(participant_id="p6", partition=0, offset=2, index=0,
                             copy_of="p1")])
    m.count(result)
    m.count(result)
    m.duplicates_now(3)
    m.duplicates_now(3)  # the join table's running total: counted once
    m.duplicates_now(5)
    m.flush()  # outcomes reach their counters once per pass of the poll loop
    got = samples(registry)
    for pid, outcome in [("p1", "answered"), ("p2", "late"), ("p3", "missing"),
                         ("p4", "declined"), ("p5", "excluded"), ("p6", "copied")]:
        key = ("fi_aggregator_participant_queries_total",
               (("outcome", outcome), ("participant", pid)))
        assert got[key] == 2, key
    assert got[("fi_aggregator_duplicates_total", ())] == 5
    counters = [f for f in text_string_to_metric_families(generate_latest(registry).decode())
                if f.type == "counter"]
    assert counters and all(s.name.endswith(("_total", "_created"))
                            for f in counters for s in f.samples)
    gauges = {f.name for f in text_string_to_metric_families(generate_latest(registry).decode())
              if f.type == "gauge"}
    assert "fi_aggregator_duplicates" not in gauges
