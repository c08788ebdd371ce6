"""An aggregator partition's incentive window: the results that share a `seq`, scored by
one label-free method, closed by count or age into one Incentive per participant.

The method owns the window's state (`base.IncentiveMethod`); the window adds the counts
every method reports and the reward split. The state is small enough to travel in the
offset-commit metadata of the transaction that emits the results, which is how a
restarted aggregator resumes the window exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy.typing as npt

from fi_stream.incentives.base import IncentiveMethod, State, sorted_query
from fi_stream.incentives.registry import get_method
from fi_stream.incentives.rewards import split_rewards
from schemas import Incentive, IncentiveCounts, Result, Window, WindowRef

_COUNT_KEYS = ("included", "late", "missing", "declined", "excluded", "copied")


class Precomputed(Protocol):
    """A query's share of a batch (`fi_stream.batched.Batched`): per method name, what
    its `add_batch` computed for this query."""

    @property
    def pre(self) -> Mapping[str, Any]: ...


def window_scores(per_query: Iterable[tuple[Sequence[str], npt.ArrayLike]],
                  method: str) -> dict[str, float]:
    """Score a window of (ids, outputs) pairs with `method`, query by query.

    A participant absent from a query gets nothing for it; one absent from every query
    is absent from the result (the caller adds zeros for ids it knows about).
    """
    m = get_method(method)
    state = m.initialize()
    for ids, outputs in per_query:
        sorted_ids, x = sorted_query(ids, outputs)
        m.add(state, sorted_ids, x)
    return m.close(state)


@dataclass
class IncentiveWindow:
    """Results of one aggregator partition that share a `seq`; closes by count or age."""

    partition: int
    seq: int
    opened_at_ms: int
    method: str
    results: int = 0
    first_completed_at_ms: int = 0
    last_completed_at_ms: int = 0
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    #: The method's state (`initialize()` when None).
    state: State | None = None
    _method: IncentiveMethod = field(init=False, repr=False, compare=False)
    _ref: WindowRef | None = field(init=False, default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._method = get_method(self.method)
        if self.state is None:
            self.state = self._method.initialize()

    @property
    def ref(self) -> WindowRef:
        """One (immutable) WindowRef per window: every result of it carries this one, not
        a model validated per query."""
        ref = self._ref
        if ref is None or (ref.partition, ref.seq) != (self.partition, self.seq):
            ref = self._ref = WindowRef(partition=self.partition, seq=self.seq)
        return ref

    def _count(self, pid: str, key: str) -> None:
        row = self.counts.get(pid)
        if row is None:
            row = self.counts[pid] = dict.fromkeys(_COUNT_KEYS, 0)
        row[key] = row.get(key, 0) + 1

    def add(self, result: Result, ids: list[str], outputs: Any,
            batched: Precomputed | None = None) -> None:
        """Tally one result (`ids` sorted, `outputs` their rows or None); `batched`
        carries what the method's `add_batch` computed for it, if anything."""
        if self.results == 0:
            self.first_completed_at_ms = result.completed_at_ms
        self.results += 1
        self.last_completed_at_ms = result.completed_at_ms
        assert self.state is not None
        if outputs is not None:
            pre = batched.pre.get(self.method) if batched is not None else None
            if pre is not None:
                self._method.add(self.state, ids, outputs, pre)
            else:
                sorted_ids, x = sorted_query(ids, outputs)
                self._method.add(self.state, sorted_ids, x)
        for pid in ids:
            self._count(pid, "included")
        for pid in result.late:
            self._count(pid, "late")
        for pid in result.missing:
            self._count(pid, "missing")
        for d in result.declined:
            self._count(d.participant_id, "declined")
        for e in result.excluded:
            self._count(e.participant_id, "excluded")
        for c in result.copied:
            self._count(c.participant_id, "copied")

    def current_scores(self) -> dict[str, float]:
        """Every participant's score so far."""
        assert self.state is not None
        return self._method.close(self.state)

    def add_late(self, participant_id: str) -> None:
        """An answer that arrived after its result was out: counted, never used."""
        self._count(participant_id, "late")

    def close(self, *, budget: float) -> list[Incentive]:
        current = self.current_scores()
        scores = {pid: current.get(pid, 0.0) for pid in current.keys() | self.counts}
        rewards = split_rewards(scores, budget)
        window = Window(partition=self.partition, seq=self.seq, results=self.results,
                        first_completed_at_ms=self.first_completed_at_ms,
                        last_completed_at_ms=self.last_completed_at_ms)
        return [
            Incentive(participant_id=pid, window=window, method=self.method, score=scores[pid],
                      reward=rewards[pid], budget=budget,
                      counts=IncentiveCounts(**self.counts.get(pid, {})))
            for pid in sorted(scores)
        ]

    def to_state(self) -> dict[str, Any]:
        """Serialised in every transaction: built by hand (`dataclasses.asdict` deep-copies
        first). The method's state goes under its `state_key` ("scores", "tallies"), the
        layout of the metadata that earlier versions wrote and read."""
        return {"partition": self.partition, "seq": self.seq, "opened_at_ms": self.opened_at_ms,
                "method": self.method, "results": self.results,
                "first_completed_at_ms": self.first_completed_at_ms,
                "last_completed_at_ms": self.last_completed_at_ms,
                "counts": self.counts, self._method.state_key: self.state}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> IncentiveWindow:
        method = get_method(state["method"])
        fields = {k: v for k, v in state.items() if k in _FIELDS}
        return cls(**fields, state=state.get(method.state_key) or method.initialize())


_FIELDS = frozenset({"partition", "seq", "opened_at_ms", "method", "results",
                     "first_completed_at_ms", "last_completed_at_ms", "counts"})
