"""From a settled or due join to a Result, and from results to per-window incentives.

Pure functions of the included answers (sorted by participant id, float64), so the
auditor recomputes exactly what the aggregator emitted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fi_stream.aggregation import (
    WEIGHTED_STRATEGIES,
    Aggregate,
    aggregate,
    soft_vote_batch,
    spectral_weights,
    to_simplex,
)
from fi_stream.copycat import suspicious
from fi_stream.incentives import (
    WINDOW_METHODS,
    Tally,
    loo_agreement,
    loo_votes_batch,
    split_rewards,
    window_scores,
)
from fi_stream.join import Answer, OpenQuery
from fi_stream.validation import QueryHeader
from schemas import (
    Incentive,
    IncentiveCounts,
    Result,
    ResultStatus,
    Tensor,
    Window,
    WindowRef,
)


def status_of(included: int, quorum: int, missing: int) -> ResultStatus:
    """`missing`: expected participants without a usable answer (missing, late, excluded)."""
    if included < quorum:
        return "insufficient"
    return "complete" if missing == 0 else "partial"


@dataclass(frozen=True, slots=True)
class Batched:
    """A query's soft vote and loo-agreement scores, computed with others in one pass."""

    outputs: np.ndarray[Any, Any]
    aggregate: Aggregate
    scores: np.ndarray[Any, Any]
    max_confidence: np.ndarray[Any, Any]
    #: Each row's argmax and its leave-one-out consensus's (k ≥ 2; else None).
    own: np.ndarray[Any, Any] | None = None
    peer: np.ndarray[Any, Any] | None = None
    #: No pair of rows is within the noise (fi_stream.copycat.suspicious): nothing to screen.
    no_copies: bool = False


def batch_matches(x: np.ndarray[Any, Any], vector: np.ndarray[Any, Any], prediction: int,
                  confidence: float, agree: np.ndarray[Any, Any]) -> bool:
    """Does the batched maths equal the reference functions on the sample `x`?"""
    want = aggregate(x, "soft_vote")
    return (want.vector.tobytes() == vector.tobytes() and want.prediction == prediction
            and want.confidence == confidence
            and loo_agreement(x).tobytes() == agree.tobytes())


def soft_vote_in_batches(queries: list[OpenQuery],
                         noise_std: Callable[[str], float] | None = None,
                         ) -> dict[str, Batched]:
    """The per-query maths of `build_result` and `IncentiveWindow.add` (soft vote,
    loo_agreement) for many queries at once: one stack and a few ufuncs per set of
    included participants instead of a dozen small numpy calls per query.

    Bit for bit what the per-query functions give; a group whose first query disagrees
    with them (a numpy build that reduces differently) is left out, and its queries take
    the per-query path. With `noise_std` (participant → σ·C), the queries whose rows hold
    no pair within the noise are marked `no_copies` (the copy screen can skip them).
    """
    groups: dict[tuple[Any, ...], list[OpenQuery]] = {}
    for oq in queries:
        if oq.answers:
            first = min(oq.answers)
            groups.setdefault((oq.answers[first].vector.shape, *sorted(oq.answers)),
                              []).append(oq)
    out: dict[str, Batched] = {}
    for (width, *rest), members in groups.items():
        ids = tuple(rest)
        if len(width) != 1 or width[0] == 0 or any(
                oq.answers[i].vector.shape != width for oq in members for i in ids):
            continue  # `build_result` names the problem, query by query
        rows = np.stack([oq.answers[i].vector for oq in members for i in ids])
        x = rows.reshape(len(members), len(ids), -1).astype(np.float64)
        if not np.isfinite(x).all():
            continue  # `aggregate` names the problem, query by query
        vector, prediction, confidence = soft_vote_batch(x)
        own = peer = None
        if len(ids) >= 2:
            own, peer = loo_votes_batch(x)
            agree = (own == peer).astype(np.float64)
        else:
            agree = np.zeros((len(members), len(ids)))
        if not batch_matches(x[0], vector[0], int(prediction[0]), float(confidence[0]),
                             agree[0]):
            continue
        max_confidence = to_simplex(x).max(axis=2)
        clean = (~suspicious(x, [noise_std(i) for i in ids]) if noise_std is not None
                 else np.zeros(len(members), dtype=np.bool_))
        for j, oq in enumerate(members):
            out[oq.query.query_id] = Batched(
                x[j], Aggregate(vector[j], int(prediction[j]), float(confidence[j])),
                agree[j], max_confidence[j],
                None if own is None else own[j], None if peer is None else peer[j],
                bool(clean[j]))
    return out


def build_result(oq: OpenQuery, *, strategy: str, completed_at_ms: int, window: WindowRef,
                 weights: Mapping[str, float] | None = None, batched: Batched | None = None,
                 copied: Sequence[tuple[Answer, str]] = (),
                 ) -> tuple[Result, list[str], np.ndarray[Any, Any] | None]:
    """The Result plus the included ids and their output rows (for the incentive window).

    A weighted strategy takes each included participant's weight from `weights` (absent:
    0; none at all: the plain mean) and the Result records them. `batched`: the soft vote
    already computed by `soft_vote_in_batches`. `copied`: answers taken out as copies
    (`fi_stream.copycat.screen_copies`), listed in the Result, neither used nor missing.
    """
    excluded = dict(oq.excluded)
    usable = _usable(oq)
    for pid in oq.answers.keys() - usable.keys():  # the join lets none through; be sure
        a = oq.answers[pid]
        excluded[pid] = type(a)(a.participant_id, a.vector, a.partition, a.offset, a.index,
                                a.produced_at_ms, "non_finite")
    ids = sorted(usable)
    copiers = {a.participant_id for a, _ in copied}  # they responded, with a copy
    missing = sorted(oq.expected - oq.responded - copiers)
    late = sorted(oq.late)
    outputs = None
    fields: dict[str, Any] = {}
    if ids:
        if batched is not None and strategy == "soft_vote" and len(ids) == len(oq.answers):
            outputs, agg = batched.outputs, batched.aggregate
        else:
            outputs = np.stack([usable[i].vector for i in ids]).astype(np.float64)
            params: dict[str, Any] = {}
            if strategy in WEIGHTED_STRATEGIES and weights:
                params["weights"] = [_weight(weights.get(i, 0.0)) for i in ids]
                fields["weights"] = params["weights"]
            agg = aggregate(outputs, strategy, **params)
        fields.update(aggregate=Tensor.from_numpy(agg.vector), prediction=agg.prediction,
                      confidence=agg.confidence)
    q = oq.query
    # Nested parts as plain dicts: validated in the same (single) call as the Result, not
    # one model construction each (most of a Result's cost at thousands per second).
    result = Result(
        query_id=q.query_id, task=q.task,
        status=status_of(len(ids), q.quorum, len(missing) + len(late) + len(excluded)),
        included=[{"participant_id": i, "partition": usable[i].partition,
                   "offset": usable[i].offset, "index": usable[i].index}
                  for i in ids],
        declined=[{"participant_id": p, "reason": r} for p, r in sorted(oq.declines.items())],
        late=late, missing=missing,
        excluded=[{"participant_id": p, "partition": a.partition, "offset": a.offset,
                   "index": a.index, "reason": a.excluded}
                  for p, a in sorted(excluded.items())],
        copied=[{"participant_id": a.participant_id, "partition": a.partition,
                 "offset": a.offset, "index": a.index, "copy_of": of} for a, of in copied],
        strategy=strategy, quorum=q.quorum,
        created_at_ms=q.created_at_ms, deadline_ms=q.deadline_ms,
        completed_at_ms=completed_at_ms, window=window, **fields,
    )
    return result, ids, outputs


def _usable(oq: OpenQuery) -> dict[str, Any]:
    """The answers `aggregate` accepts: finite rows of one width (the join's checks, again,
    so that no input makes `build_result` raise)."""
    answers = {p: a for p, a in oq.answers.items()
               if a.vector.ndim == 1 and a.vector.size and np.isfinite(a.vector).all()}
    if not answers:
        return {}
    width = answers[min(answers)].vector.shape
    return {p: a for p, a in answers.items() if a.vector.shape == width}


def _weight(value: float) -> float:
    """A history weight `weighted` accepts (finite, >= 0)."""
    w = float(value)
    return w if np.isfinite(w) and w >= 0 else 0.0


def unanswered_result(header: QueryHeader, *, status: ResultStatus, reason: str,
                      strategy: str, completed_at_ms: int, window: WindowRef) -> Result:
    """The Result of a query settled without asking anyone: `rejected` (the query is
    invalid) or `insufficient` (no registered participant serves its task)."""
    return Result(query_id=header.query_id, task=header.task, status=status,
                  reason=reason[:1000], strategy=strategy, quorum=header.quorum,
                  created_at_ms=header.created_at_ms, deadline_ms=header.deadline_ms,
                  completed_at_ms=completed_at_ms, window=window)


_COUNT_KEYS = ("included", "late", "missing", "declined", "excluded", "copied")


@dataclass
class IncentiveWindow:
    """Results of one aggregator partition that share a `seq`; closes by count or age.

    Label-free scores are sums of per-query scores, so the window keeps running tallies:
    small enough to travel in the offset-commit metadata of the transaction that emits
    its results, which is how a restarted aggregator resumes the window exactly.
    """

    partition: int
    seq: int
    opened_at_ms: int
    method: str
    results: int = 0
    first_completed_at_ms: int = 0
    last_completed_at_ms: int = 0
    scores: dict[str, float] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    #: `WINDOW_METHODS` only: each participant's summed integer tallies.
    tallies: dict[str, Tally] = field(default_factory=dict)
    #: Max-confidence of each included answer, for spectral weights (memory only).
    confidences: list[dict[str, float]] = field(default_factory=list)

    @property
    def ref(self) -> WindowRef:
        return WindowRef(partition=self.partition, seq=self.seq)

    def _count(self, pid: str, key: str) -> None:
        row = self.counts.get(pid)
        if row is None:
            row = self.counts[pid] = dict.fromkeys(_COUNT_KEYS, 0)
        row[key] = row.get(key, 0) + 1

    def add(self, result: Result, ids: list[str], outputs: np.ndarray[Any, Any] | None,
            batched: Batched | None = None) -> None:
        """Tally one result; `batched` carries its scores when computed in a batch."""
        if self.results == 0:
            self.first_completed_at_ms = result.completed_at_ms
        self.results += 1
        self.last_completed_at_ms = result.completed_at_ms
        if outputs is not None:
            windowed = WINDOW_METHODS.get(self.method)
            if windowed is not None:
                self._tally(ids, outputs, batched)
            elif batched is not None and self.method == "loo_agreement":
                scores = dict(zip(ids, batched.scores.tolist(), strict=True))
            else:
                scores = window_scores([(ids, outputs)], self.method)
            if windowed is None:
                for pid, score in scores.items():
                    self.scores[pid] = self.scores.get(pid, 0.0) + score
            maxconf = (batched.max_confidence if batched is not None
                       else to_simplex(outputs).max(axis=1))
            self.confidences.append(dict(zip(ids, maxconf.tolist(), strict=True)))
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

    def _tally(self, ids: list[str], outputs: np.ndarray[Any, Any],
               batched: Batched | None) -> None:
        """Add one query's tallies; `ids` sorted, `outputs` their rows."""
        votes = None
        if batched is not None and batched.own is not None and batched.peer is not None:
            votes = (batched.own.tolist(), batched.peer.tolist())
        WINDOW_METHODS[self.method].add(self.tallies, ids, outputs, votes)

    def current_scores(self) -> dict[str, float]:
        """Every participant's score so far (the tallied methods score their sums)."""
        windowed = WINDOW_METHODS.get(self.method)
        if windowed is None:
            return dict(self.scores)
        return {pid: windowed.score(t) for pid, t in self.tallies.items()}

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

    def spectral(self) -> dict[str, float] | None:
        """Spectral weights over the participants present in every result of the window."""
        if len(self.confidences) < 2:
            return None
        common = sorted(set.intersection(*(set(c) for c in self.confidences)))
        if len(common) < 2:
            return None
        matrix = np.array([[c[p] for p in common] for c in self.confidences])
        return dict(zip(common, spectral_weights(matrix).tolist(), strict=True))

    def to_state(self) -> dict[str, Any]:
        """Serialised in every transaction: built by hand, since `dataclasses.asdict` deep-
        copies `confidences` first, which cost the aggregator a third of its CPU."""
        return {"partition": self.partition, "seq": self.seq, "opened_at_ms": self.opened_at_ms,
                "method": self.method, "results": self.results,
                "first_completed_at_ms": self.first_completed_at_ms,
                "last_completed_at_ms": self.last_completed_at_ms,
                "scores": self.scores, "counts": self.counts,
                "tallies": self.tallies}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> IncentiveWindow:
        return cls(**state)
