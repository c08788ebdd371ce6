"""The audit's typed output: per-participant privacy spend, per-window incentive audits and
the report that gathers them with the discrepancies (what --json writes and the HTML report
renders)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fi_stream.audit.findings import KINDS, Discrepancy


def finite(x: float | None) -> float | None:
    """JSON has no inf/nan: report them as null (the spend row also says `exceeded`)."""
    return x if x is not None and math.isfinite(x) else None


def latency_summary(latencies: Sequence[int]) -> dict[str, float]:
    if not latencies:
        return {"count": 0}
    a = np.asarray(latencies, dtype=np.float64)
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"count": len(a), "mean": float(a.mean()), "p50": float(p50), "p95": float(p95),
            "p99": float(p99), "max": float(a.max())}


@dataclass(kw_only=True)
class PrivacySpend:
    """A participant's spend recomputed from its batches (budget from its registry entry)."""

    participant_id: str
    answers: int
    batches: int
    noise_multipliers: list[float]
    #: Each mechanism with its parameters, as `Mechanism.describe` writes it.
    mechanisms: list[str]
    #: Answers that replayed an earlier answer to the same input (free: post-processing).
    reused: int
    delta: float | None = None
    epsilon_max: float | None = None
    epsilon: float | None = None  # None without a registered budget (no δ to report ε at)
    max_answers: int | None = None
    exceeded: bool = False
    #: (produced_at_ms, ε) after each sampled batch, for plots.
    series: list[tuple[int, float]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "participant_id": self.participant_id, "answers": self.answers,
            "batches": self.batches, "noise_multipliers": self.noise_multipliers,
            "mechanisms": self.mechanisms, "reused": self.reused,
            "delta": self.delta, "epsilon_max": self.epsilon_max,
            "epsilon": finite(self.epsilon), "max_answers": self.max_answers,
            "exceeded": self.exceeded,
            "series": [[t, finite(e)] for t, e in self.series],
        }


@dataclass(kw_only=True)
class WindowAudit:
    """One incentive window: what was recorded, what the replay gives, merit vs label-free."""

    partition: int
    seq: int
    results: int
    closed: bool
    verified: bool
    method: str | None = None
    first_completed_at_ms: int = 0
    last_completed_at_ms: int = 0
    rewards: dict[str, float] = field(default_factory=dict)  # recorded
    #: The reward budget the window's label-free incentives split (recorded).
    budget: float | None = None
    scores: dict[str, float] = field(default_factory=dict)  # recomputed, label-free
    labelled: int = 0
    merit: dict[str, float] = field(default_factory=dict)  # Shapley of ensemble accuracy
    spearman: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "partition": self.partition, "seq": self.seq, "results": self.results,
            "closed": self.closed, "verified": self.verified, "method": self.method,
            "first_completed_at_ms": self.first_completed_at_ms,
            "last_completed_at_ms": self.last_completed_at_ms,
            "rewards": self.rewards, "budget": self.budget, "scores": self.scores,
            "labelled": self.labelled,
            "merit": self.merit, "spearman": finite(self.spearman),
        }


@dataclass(kw_only=True)
class AuditReport:
    counts: dict[str, int]
    discrepancies: list[Discrepancy]
    spend: list[PrivacySpend]
    dlq: dict[str, int]  # error header → records
    dlq_sources: dict[str, int]  # "error topic" → records
    windows: list[WindowAudit]
    latencies_ms: list[int]
    undecodable: dict[str, int]  # "topic reason" → records
    partial: bool
    #: Filled by the reader: events read, seconds, events/s.
    throughput: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.discrepancies

    def by_kind(self) -> dict[str, int]:
        counted = Counter(d.kind for d in self.discrepancies)
        return {k: counted[k] for k in KINDS if counted[k]}

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "partial": self.partial, "counts": self.counts,
            "discrepancy_kinds": self.by_kind(),
            "discrepancies": [d.to_json() for d in self.discrepancies],
            "privacy": [s.to_json() for s in self.spend],
            "dlq": {"by_error": self.dlq, "by_error_and_source": self.dlq_sources},
            "undecodable": self.undecodable,
            "windows": [w.to_json() for w in self.windows],
            "latency_ms": latency_summary(self.latencies_ms),
            "throughput": self.throughput,
        }
