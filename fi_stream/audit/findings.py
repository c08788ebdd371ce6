"""Findings: the kinds of discrepancy, one discrepancy, and the collector the checks add
to (with the counters the report shows beside them)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from fi_stream.audit.log import Logged, TopicKind
from schemas import Result

Kind = Literal[
    "missing_result", "duplicate_result", "result_without_query", "result_query_mismatch",
    "unknown_strategy", "included_order", "status_mismatch", "aggregate_mismatch",
    "prediction_mismatch", "confidence_mismatch", "unknown_response",
    "response_participant_mismatch", "response_query_mismatch", "response_after_deadline",
    "unknown_participant", "bad_signature", "late_response_used",
    "incentive_score_mismatch", "incentive_reward_mismatch", "incentive_counts_mismatch",
    "incentive_window_mismatch", "incentive_method_mismatch", "incentive_budget_mismatch",
    "unknown_incentive_method", "duplicate_incentive", "missing_incentive",
    "budget_exceeded", "malformed_record", "implausible_answer_used", "wrong_exclusion",
    "copy_flag_mismatch",
    "unsigned_registry_record", "forged_registry_record", "stale_registry_record",
]
#: Every discrepancy kind, in the order the report lists them.
KINDS: tuple[Kind, ...] = Kind.__args__  # type: ignore[attr-defined]
_ORDER = {k: i for i, k in enumerate(KINDS)}


class WindowKey(NamedTuple):
    """An incentive window: the aggregator partition and its sequence number."""

    partition: int
    seq: int


def ref(topic: TopicKind, partition: int, offset: int, index: int | None = None) -> str:
    """`topic:partition:offset[#index]`: the same form `--from`/`--to` take."""
    return f"{topic}:{partition}:{offset}" + ("" if index is None else f"#{index}")


@dataclass(frozen=True, slots=True)
class Discrepancy:
    kind: Kind
    message: str
    query_id: str | None = None
    participant_id: str | None = None
    window: tuple[int, int] | None = None  # (partition, seq)
    refs: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "message": self.message}
        if self.query_id is not None:
            out["query_id"] = self.query_id
        if self.participant_id is not None:
            out["participant_id"] = self.participant_id
        if self.window is not None:
            out["window"] = {"partition": self.window[0], "seq": self.window[1]}
        if self.refs:
            out["refs"] = list(self.refs)
        return out

    def line(self) -> str:
        ids = [f"query={self.query_id}" if self.query_id else "",
               f"participant={self.participant_id}" if self.participant_id else "",
               f"window={self.window[0]}/{self.window[1]}" if self.window else "",
               " ".join(self.refs)]
        return f"{self.kind}: {' '.join(i for i in ids if i)}: {self.message}"


class Findings:
    """What the checks found, in the order they found it, and what they counted."""

    def __init__(self) -> None:
        self.found: list[Discrepancy] = []
        self.counts: Counter[str] = Counter()

    def add(self, kind: Kind, message: str, *, query_id: str | None = None,
            participant_id: str | None = None, window: tuple[int, int] | None = None,
            refs: tuple[str, ...] = ()) -> None:
        self.found.append(Discrepancy(kind, message, query_id, participant_id, window, refs))

    def on_result(self, logged: Logged[Result], kind: Kind, message: str, *more: str,
                  pid: str | None = None) -> None:
        """A finding about one result (its position first, then `more` references)."""
        self.add(kind, message, query_id=logged.event.query_id, participant_id=pid,
                 refs=(ref("results", logged.partition, logged.offset), *more))

    def by_kind(self) -> list[Discrepancy]:
        """Grouped in the order of `KINDS`; log order within a kind (the sort is stable)."""
        return sorted(self.found, key=lambda d: _ORDER[d.kind])
