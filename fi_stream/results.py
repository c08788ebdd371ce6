"""From a settled or due join to a Result, and from results to per-window incentives.

Pure functions of the included answers (sorted by participant id, float64), so the
auditor recomputes exactly what the aggregator emitted.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fi_stream.aggregation import aggregate
from fi_stream.incentives import split_rewards, window_scores

from fi_stream.join import OpenQuery
from schemas import (
    Incentive,
    IncentiveCounts,
    IncludedAnswer,
    ParticipantDecline,
    Result,
    ResultStatus,
    Tensor,
    Window,
    WindowRef,
)


def status_of(included: int, quorum: int, missing: int) -> ResultStatus:
    if included < quorum:
        return "insufficient"
    return "complete" if missing == 0 else "partial"


def build_result(oq: OpenQuery, *, strategy: str, completed_at_ms: int,
                 window: WindowRef) -> tuple[Result, list[str], np.ndarray[Any, Any] | None]:
    """The Result plus the included ids and their output rows (for the incentive window)."""
    ids = sorted(oq.answers)
    responded = oq.answers.keys() | oq.declines.keys() | oq.late
    missing = sorted(oq.expected - responded)
    late = sorted(oq.late)
    outputs = None
    fields: dict[str, Any] = {}
    if ids:
        outputs = np.stack([oq.answers[i].vector for i in ids]).astype(np.float64)
        agg = aggregate(outputs, strategy)
        fields = {"aggregate": Tensor.from_numpy(agg.vector), "prediction": agg.prediction,
                  "confidence": agg.confidence}
    q = oq.query
    result = Result(
        query_id=q.query_id, task=q.task,
        status=status_of(len(ids), q.quorum, len(missing) + len(late)),
        included=[IncludedAnswer(participant_id=i, partition=oq.answers[i].partition,
                                 offset=oq.answers[i].offset, index=oq.answers[i].index)
                  for i in ids],
        declined=[ParticipantDecline(participant_id=p, reason=r)
                  for p, r in sorted(oq.declines.items())],
        late=late, missing=missing, strategy=strategy, quorum=q.quorum,
        created_at_ms=q.created_at_ms, deadline_ms=q.deadline_ms,
        completed_at_ms=completed_at_ms, window=window, **fields,
    )
    return result, ids, outputs


@dataclass
class IncentiveWindow:
    """Results of one aggregator partition that share a `seq`; closes by count or age."""

    partition: int
    seq: int
    opened_at_ms: int
    results: int = 0
    first_completed_at_ms: int = 0
    last_completed_at_ms: int = 0
    per_query: list[tuple[list[str], np.ndarray[Any, Any]]] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(
        default_factory=lambda: defaultdict(lambda: dict.fromkeys(
            ("included", "late", "missing", "declined"), 0)))

    @property
    def ref(self) -> WindowRef:
        return WindowRef(partition=self.partition, seq=self.seq)

    def add(self, result: Result, ids: list[str], outputs: np.ndarray[Any, Any] | None) -> None:
        if self.results == 0:
            self.first_completed_at_ms = result.completed_at_ms
        self.results += 1
        self.last_completed_at_ms = result.completed_at_ms
        if outputs is not None:
            self.per_query.append((ids, outputs))
        for pid in ids:
            self.counts[pid]["included"] += 1
        for pid in result.late:
            self.counts[pid]["late"] += 1
        for pid in result.missing:
            self.counts[pid]["missing"] += 1
        for d in result.declined:
            self.counts[d.participant_id]["declined"] += 1

    def add_late(self, participant_id: str) -> None:
        """An answer that arrived after its result was out: counted, never used."""
        self.counts[participant_id]["late"] += 1

    def close(self, *, method: str, budget: float) -> list[Incentive]:
        scores = window_scores(self.per_query, method)
        for pid in self.counts:
            scores.setdefault(pid, 0.0)
        rewards = split_rewards(scores, budget)
        window = Window(partition=self.partition, seq=self.seq, results=self.results,
                        first_completed_at_ms=self.first_completed_at_ms,
                        last_completed_at_ms=self.last_completed_at_ms)
        return [
            Incentive(participant_id=pid, window=window, method=method, score=scores[pid],
                      reward=rewards[pid], budget=budget,
                      counts=IncentiveCounts(**self.counts[pid]))
            for pid in sorted(scores)
        ]
