"""Replay under another strategy: recompute the log's results from the recorded answers,
and with fi.feedback labels compare the accuracy of the recorded and replayed results."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fi_stream.aggregation import STRATEGIES, aggregate
from fi_stream.audit.log import AuditLog
from fi_stream.audit.rows import RowIndex, response_views
from fi_stream.errors import ConfigError
from schemas import Result


@dataclass(kw_only=True)
class ReplayReport:
    strategy: str
    results: int = 0  # first result per query
    replayed: int = 0  # with every listed row in the log
    changed: int = 0  # replayed prediction differs from the recorded one
    labelled: int = 0
    recorded_correct: int = 0
    replayed_correct: int = 0
    recorded_strategies: dict[str, int] = field(default_factory=dict)

    @property
    def recorded_accuracy(self) -> float | None:
        return self.recorded_correct / self.labelled if self.labelled else None

    @property
    def replayed_accuracy(self) -> float | None:
        return self.replayed_correct / self.labelled if self.labelled else None

    def to_json(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy, "results": self.results, "replayed": self.replayed,
            "changed": self.changed, "labelled": self.labelled,
            "recorded_accuracy": self.recorded_accuracy,
            "replayed_accuracy": self.replayed_accuracy,
            "recorded_strategies": self.recorded_strategies,
        }

    def add(self, recorded: Result, prediction: int, label: int | None) -> None:
        """One replayed result: its new prediction and, if any, its label."""
        self.replayed += 1
        self.changed += prediction != recorded.prediction
        if label is not None:
            self.labelled += 1
            self.recorded_correct += recorded.prediction == label
            self.replayed_correct += prediction == label


def replay(log: AuditLog, strategy: str) -> ReplayReport:
    """Recompute the results of the log under `strategy` from the recorded answers.

    Where fi.feedback has a label, compares the accuracy of the recorded results with the
    replayed ones (over the same queries: those replayed and labelled).
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown aggregation strategy {strategy!r}; "
                          f"use one of {', '.join(sorted(STRATEGIES))}")
    rows = RowIndex(response_views(log.responses))
    labels = {f.event.query_id: f.event.label for f in log.feedback}
    report = ReplayReport(strategy=strategy)
    strategies: Counter[str] = Counter()
    seen: set[str] = set()
    for logged in log.results:
        r = logged.event
        if r.query_id in seen:
            continue
        seen.add(r.query_id)
        report.results += 1
        strategies[r.strategy] += 1
        x = rows.rows(r.included)  # None: a row is not in the log (or there are none)
        if x is not None and np.isfinite(x).all():
            report.add(r, aggregate(x, strategy).prediction, labels.get(r.query_id))
    report.recorded_strategies = dict(sorted(strategies.items()))
    return report
