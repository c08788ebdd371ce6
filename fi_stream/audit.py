"""Audit by replay: recompute results, incentives and privacy spend from the log, and name
every discrepancy. Pure: the caller reads the topics (consumers/auditor.py) and hands in the
decoded events with their log positions; nothing here does I/O or reads a clock.

What is checked (DESIGN §1, §4, §6), each finding a `Discrepancy` with a stable `kind`:

- every query has exactly one result (`missing_result`, `duplicate_result`), and every
  result a query (`result_without_query`) that it agrees with (`result_query_mismatch`);
- each result's aggregate, prediction and confidence equal `aggregate(rows, strategy)` over
  exactly the rows it lists, bit for bit (`aggregate_mismatch`, `prediction_mismatch`,
  `confidence_mismatch`), its status follows from its counts (`status_mismatch`);
- every listed answer exists (`unknown_response`), is that participant's
  (`response_participant_mismatch`) answer to that query (`response_query_mismatch`), was
  produced by the deadline (`response_after_deadline`), is signed with a key registered for
  the participant (`unknown_participant`, `bad_signature`), and is not also listed late
  (`late_response_used`);
- every incentive equals a replay of `IncentiveWindow` over the window's results
  (`incentive_score_mismatch`, `incentive_reward_mismatch`, `incentive_counts_mismatch`,
  `incentive_window_mismatch`, `incentive_method_mismatch`, `incentive_budget_mismatch`,
  `duplicate_incentive`, `missing_incentive`);
- every answer row a result includes is plausible for the participant's registered
  privacy (`implausible_answer_used`, fi_stream.validation.screen_rows), and every row it
  lists as excluded really is not (`wrong_exclusion`); a `rejected` result includes nothing
  and says why (`status_mismatch`);
- every participant's privacy spend, recomputed from its VALIDLY SIGNED response batches
  (a forged batch spends nothing of anyone's), is within the budget it registered
  (`budget_exceeded`);
- the copies a result left out are copies, and none it included is (`copy_flag_mismatch`:
  `fi_stream.copycat.flag_copies` over its included and copied rows, registered σ·C);
- with the operator's public key (`AuditLog.operator_pubkey`): every registry record is
  operator-signed (`unsigned_registry_record` for unsigned entries and bare tombstones,
  `forged_registry_record` for a signature that does not verify, `stale_registry_record`
  for a replay of an older admission), only trusted entries give keys and budgets, and
  each batch verifies with the key the operator made valid at its `produced_at_ms`.

A *slice* of the log (``AuditLog.partial``) is audited as far as it allows: what needs a
record outside the slice is counted as out of range instead of reported.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import numpy as np
import numpy.typing as npt

from fi_stream.aggregation import STRATEGIES, aggregate, soft_vote_batch
from fi_stream.copycat import flag_copies, suspicious
from fi_stream.errors import ConfigError
from fi_stream.incentives import (
    INCENTIVE_METHODS,
    MAX_EXACT_SHAPLEY,
    ensemble_accuracy_value,
    loo_agreement_batch,
    shapley_exact,
    spearman,
    split_rewards,
)
from fi_stream.merit import METHOD as MERIT_METHOD
from fi_stream.merit import LabeledQuery, merit_incentives, window_labels
from fi_stream.operator import ACCEPTED, KeyPeriod, Verdict, judge, registry_key
from fi_stream.privacy import Mechanism, PrivacyBudget, epsilon, max_answers
from fi_stream.results import IncentiveWindow, batch_matches, status_of
from fi_stream.signing import verify_batch
from fi_stream.validation import own_spec, privacy_problem, screen_rows
from schemas import (
    Client,
    Event,
    Feedback,
    Incentive,
    IncentiveCounts,
    Participant,
    Query,
    ResponseBatch,
    Result,
    Window,
)

E = TypeVar("E", bound=Event)
F64 = npt.NDArray[np.float64]

TopicKind = Literal["queries", "responses", "results", "incentives", "feedback", "registry",
                    "dlq"]
TOPIC_KINDS: tuple[TopicKind, ...] = ("queries", "responses", "results", "incentives",
                                      "feedback", "registry", "dlq")

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

#: Results may lag their deadline by this much (the aggregator waits for lagging
#: partitions up to 5 s) before a query without one counts as missing.
DEFAULT_GRACE_MS = 10_000

#: Topics whose records are the system's own output: one that does not decode is a finding.
_OUTPUT_TOPICS = frozenset({"results", "incentives"})


# -- input --------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Logged(Generic[E]):
    """An event and where it lives: partition and offset of its topic, broker timestamp."""

    event: E
    partition: int
    offset: int
    timestamp_ms: int = 0


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A fi.dlq record, by its headers (the value is the original bytes, not decoded)."""

    partition: int
    offset: int
    error: str
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    consumer: str | None = None


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A record of an audited topic that is not a valid event (reason as in the DLQ)."""

    topic: TopicKind
    partition: int
    offset: int
    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Tombstone:
    """A registry record without a value (compaction's delete marker)."""

    key: str
    partition: int
    offset: int


#: A batch may be signed with a key up to this long outside the period the operator made
#: it valid (clocks of the operator and the participant differ; a rotation takes effect
#: when the participant restarts).
KEY_SKEW_MS = 2_000

_REFUSED: dict[Verdict, Kind] = {
    "unsigned": "unsigned_registry_record", "bare_tombstone": "unsigned_registry_record",
    "forged": "forged_registry_record", "key_mismatch": "forged_registry_record",
    "stale": "stale_registry_record",
}


@dataclass(kw_only=True)
class AuditLog:
    """What the reader found, per topic, in log order within each partition."""

    queries: list[Logged[Query]] = field(default_factory=list)
    responses: list[Logged[ResponseBatch]] = field(default_factory=list)
    results: list[Logged[Result]] = field(default_factory=list)
    incentives: list[Logged[Incentive]] = field(default_factory=list)
    feedback: list[Logged[Feedback]] = field(default_factory=list)
    registry: list[Logged[Participant]] = field(default_factory=list)
    #: Query clients and tombstones of fi.registry (audited with an operator key).
    clients: list[Logged[Client]] = field(default_factory=list)
    tombstones: list[Tombstone] = field(default_factory=list)
    #: The operator's public key: set, only operator-signed registry entries are trusted.
    operator_pubkey: bytes | None = None
    dlq: list[DeadLetter] = field(default_factory=list)
    undecodable: list[Undecodable] = field(default_factory=list)
    #: Records read per topic (decodable or not).
    records: dict[str, int] = field(default_factory=dict)
    #: True when only a slice of the log was read (--from/--to).
    partial: bool = False
    #: First offset read per fi.responses partition: references below it are out of range.
    response_starts: dict[int, int] = field(default_factory=dict)
    #: Queries whose deadline + grace is before this time must have a result; None: all must.
    horizon_ms: int | None = None

    @property
    def total_records(self) -> int:
        return sum(self.records.values())


# -- output -------------------------------------------------------------------------------------

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
    delta: float | None
    epsilon_max: float | None
    epsilon: float | None  # None without a registered budget (no δ to report ε at)
    max_answers: int | None
    exceeded: bool
    #: (produced_at_ms, ε) after each sampled batch, for plots.
    series: list[tuple[int, float]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "participant_id": self.participant_id, "answers": self.answers,
            "batches": self.batches, "noise_multipliers": self.noise_multipliers,
            "mechanisms": self.mechanisms, "reused": self.reused,
            "delta": self.delta, "epsilon_max": self.epsilon_max,
            "epsilon": _finite(self.epsilon), "max_answers": self.max_answers,
            "exceeded": self.exceeded,
            "series": [[t, _finite(e)] for t, e in self.series],
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
            "merit": self.merit, "spearman": _finite(self.spearman),
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
            "latency_ms": _latency_summary(self.latencies_ms),
            "throughput": self.throughput,
        }


def _finite(x: float | None) -> float | None:
    """JSON has no inf/nan: report them as null (the spend row also says `exceeded`)."""
    return x if x is not None and math.isfinite(x) else None


def _latency_summary(latencies: Sequence[int]) -> dict[str, float]:
    if not latencies:
        return {"count": 0}
    a = np.asarray(latencies, dtype=np.float64)
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"count": len(a), "mean": float(a.mean()), "p50": float(p50), "p95": float(p95),
            "p99": float(p99), "max": float(a.max())}


# -- the audit ----------------------------------------------------------------------------------

Verify = Callable[[ResponseBatch, bytes], bool]


def registered_keys(registry: Iterable[Logged[Participant]]) -> dict[str, list[bytes]]:
    """Every public key each participant registered, in log order.

    A batch is genuine if ANY of them verifies it: a participant that rotated its key still
    signed its older batches with the old one (compaction may have dropped it; then the
    old batches are reported)."""
    keys: dict[str, list[bytes]] = {}
    for logged in registry:
        p = logged.event
        known = keys.setdefault(p.participant_id, [])
        if p.public_key not in known:
            known.append(p.public_key)
    return keys


@dataclass(slots=True)
class _Checked:
    """A result after its checks, with what the window replay needs."""

    logged: Logged[Result]
    ids: list[str]
    #: Rows of the listed answers, flat indices into the matrix of `width` (see `_Rows`).
    flat: list[int]
    width: int = 0
    #: Every listed row resolved (and, once gathered, finite).
    usable: bool = True
    rows: F64 | None = None  # (k, C) float64, gathered for usable results with answers
    agree: F64 | None = None  # per-row loo_agreement scores, when computed in a batch
    close_pair: bool = True  # some pair of its rows is within the noise (copycat.suspicious)


class _Rows:
    """Every batch's output rows in one float64 matrix per width, so that the rows of
    thousands of results are gathered with one fancy index instead of one stack each.

    Converting everything to float64 first is exactly what `np.stack(rows).astype(float64)`
    does per result: every wire dtype converts to float64 the same either way."""

    def __init__(self, batches: Mapping[tuple[int, int], Logged[ResponseBatch]]) -> None:
        #: (partition, offset) → (batch, participant, answered, produced_at_ms, width, start)
        self.base: dict[tuple[int, int],
                        tuple[Logged[ResponseBatch], str, list[str], int, int, int]] = {}
        chunks: dict[int, list[npt.NDArray[Any]]] = defaultdict(list)
        sizes: Counter[int] = Counter()
        for key, logged in batches.items():
            b = logged.event
            rows = b.outputs.to_numpy()
            width = rows.shape[1]
            self.base[key] = (logged, b.participant_id, b.answered, b.produced_at_ms, width,
                              sizes[width])
            sizes[width] += rows.shape[0]
            chunks[width].append(rows)
        self.matrices: dict[int, F64] = {
            w: np.concatenate(c, dtype=np.float64) for w, c in chunks.items()}


class _Audit:
    def __init__(self, log: AuditLog, grace_ms: int, verify: Verify) -> None:
        self.log = log
        self.grace_ms = grace_ms
        self.verify = verify
        self.out: list[Discrepancy] = []
        self.counts: Counter[str] = Counter()
        self.keys = registered_keys(log.registry)
        self.entries = {p.event.participant_id: p.event for p in log.registry}
        #: With an operator: the keys it made valid per participant, over time.
        self.periods: dict[str, list[KeyPeriod]] | None = None
        if log.operator_pubkey is not None:
            self.periods, self.entries = self._trusted_registry(log.operator_pubkey)
        self.batches = {(r.partition, r.offset): r for r in log.responses}
        self.rows = _Rows(self.batches)
        #: fi.responses position → the (result, row) pairs that list it.
        self._listings: dict[tuple[int, int], list[tuple[_Checked, int]]] = {}
        self.queries: dict[str, Logged[Query]] = {}
        for q in log.queries:
            if q.event.query_id in self.queries:
                self.counts["duplicate_queries"] += 1
            else:
                self.queries[q.event.query_id] = q
        self.labels: dict[str, int] = {}
        for f in log.feedback:  # the first label of a query counts (as in merit)
            self.labels.setdefault(f.event.query_id, f.event.label)
        #: fi.responses position → does the batch verify with a registered key?
        self._genuine: dict[tuple[int, int], bool] = {}
        #: fi.responses position → per row, why it is implausible (None: plausible).
        self._screened: dict[tuple[int, int], list[str | None]] = {}

    def genuine(self, key: tuple[int, int]) -> bool:
        """Does the batch at `key` verify with a key its participant registered (with an
        operator: the key valid when it was produced)? Each batch is verified once, ~65 µs,
        however many checks ask."""
        known = self._genuine.get(key)
        if known is None:
            batch = self.batches[key].event
            keys = self._valid_keys(batch.participant_id, batch.produced_at_ms) or []
            known = self._genuine[key] = any(self.verify(batch, k) for k in keys)
        return known

    def screened(self, key: tuple[int, int]) -> list[str | None]:
        """`screen_rows` of the batch at `key` against its participant's registered privacy
        and published width: exactly the aggregator's verdict."""
        rows = self._screened.get(key)
        if rows is None:
            batch = self.batches[key].event
            entry = self.entries.get(batch.participant_id)
            if entry is None:
                rows = [None] * len(batch.answered)  # `unknown_participant` says it all
            elif privacy_problem(batch.privacy, entry.privacy) is not None:
                rows = ["privacy_mismatch"] * len(batch.answered)
            else:
                spec = own_spec(entry, batch.task)
                rows = list(screen_rows(batch.outputs.to_numpy(), entry.privacy,
                                        spec.num_classes if spec is not None else None))
            self._screened[key] = rows
        return rows

    def _trusted_registry(self, operator_pubkey: bytes
                          ) -> tuple[dict[str, list[KeyPeriod]], dict[str, Participant]]:
        """Replay the registry in log order as a `RegistryView` would: flag every record
        the operator did not sign, and collect the key periods of the trusted ones."""
        records: list[tuple[int, int, str, Participant | Client | None]] = [
            (p.partition, p.offset, registry_key(p.event), p.event) for p in self.log.registry]
        records += [(c.partition, c.offset, registry_key(c.event), c.event)
                    for c in self.log.clients]
        records += [(t.partition, t.offset, t.key, None) for t in self.log.tombstones]
        latest: dict[str, Participant | Client] = {}
        periods: dict[str, list[KeyPeriod]] = defaultdict(list)
        for partition, offset, key, entry in sorted(records, key=lambda r: (r[0], r[1])):
            verdict = judge(entry, key, latest.get(key), operator_pubkey)
            if verdict not in ACCEPTED:
                self.add(_REFUSED[verdict], f"registry record for {key!r} refused: {verdict}",
                         participant_id=key if isinstance(entry, Participant | None) else None,
                         refs=(ref("registry", partition, offset),))
                continue
            assert entry is not None  # judge refuses tombstones when there is an operator
            latest[key] = entry
            if isinstance(entry, Participant):
                mine = periods[entry.participant_id]
                if mine and mine[-1].until_ms is None:
                    mine[-1] = KeyPeriod(mine[-1].public_key, mine[-1].since_ms,
                                         entry.registered_at_ms)
                if entry.active:
                    mine.append(KeyPeriod(entry.public_key, entry.registered_at_ms, None))
        entries = {k: e for k, e in latest.items() if isinstance(e, Participant)}
        return dict(periods), entries

    def _valid_keys(self, pid: str, at_ms: int) -> list[bytes] | None:
        """Keys that may have signed a batch of `pid` produced at `at_ms` (None: `pid` was
        never admitted)."""
        if self.periods is None:
            keys = self.keys.get(pid)
            return list(reversed(keys)) if keys else None
        periods = self.periods.get(pid)
        if not periods:
            return None
        return [p.public_key for p in periods
                if p.since_ms - KEY_SKEW_MS <= at_ms
                and (p.until_ms is None or at_ms < p.until_ms + KEY_SKEW_MS)]

    def add(self, kind: Kind, message: str, **ids: Any) -> None:
        self.out.append(Discrepancy(kind, message, **ids))

    def flag(self, c: _Checked, kind: Kind, message: str, *more: str,
             pid: str | None = None) -> None:
        self.add(kind, message, query_id=c.logged.event.query_id, participant_id=pid,
                 refs=(ref("results", c.logged.partition, c.logged.offset), *more))

    # -- results ------------------------------------------------------------------------------

    def results(self) -> list[_Checked]:
        by_query: dict[str, list[Logged[Result]]] = defaultdict(list)
        checked: list[_Checked] = []
        for logged in self.log.results:
            by_query[logged.event.query_id].append(logged)
            checked.append(self._result(logged))
        self._recompute(checked)
        horizon = self.log.horizon_ms
        for qid, q in self.queries.items():
            if qid in by_query:
                continue
            if horizon is not None and q.event.deadline_ms + self.grace_ms > horizon:
                self.counts["queries_pending"] += 1
                continue
            if self.log.partial:  # its result may lie outside the slice
                self.counts["queries_without_result_in_range"] += 1
                continue
            self.add("missing_result", f"no result for the query at "
                     f"{ref('queries', q.partition, q.offset)} (deadline {q.event.deadline_ms})",
                     query_id=qid, refs=(ref("queries", q.partition, q.offset),))
        for qid, found in by_query.items():
            if len(found) > 1:
                refs = tuple(ref("results", r.partition, r.offset) for r in found)
                self.add("duplicate_result", f"{len(found)} results for one query",
                         query_id=qid, refs=refs)
            if qid not in self.queries:
                if all(r.event.status == "rejected" for r in found):
                    # The query's record does not decode (the auditor cannot index it by
                    # id): its rejected result is the answer it is owed.
                    self.counts["rejected_undecodable_queries"] += 1
                elif self.log.partial:
                    self.counts["results_out_of_range"] += len(found)
                else:
                    self.add("result_without_query", "no such query in the log", query_id=qid,
                             refs=tuple(ref("results", r.partition, r.offset) for r in found))
        self.counts["queries"] = len(self.queries)
        self.counts["queries_answered"] = sum(1 for q in self.queries if q in by_query)
        self.counts["results"] = len(self.log.results)
        return checked

    def _result(self, logged: Logged[Result]) -> _Checked:
        """Every check that needs no arithmetic; finds the rows the result lists."""
        r = logged.event
        qid = r.query_id
        ids = [a.participant_id for a in r.included]
        c = _Checked(logged, ids, [])
        q = self.queries.get(qid)
        deadline = r.deadline_ms
        if q is not None:
            qe = q.event
            deadline = qe.deadline_ms
            if (r.task, r.created_at_ms, r.deadline_ms, r.quorum) != (
                    qe.task, qe.created_at_ms, qe.deadline_ms, qe.quorum):
                wrong = [f"{name} {getattr(r, name)!r} != query's {getattr(qe, name)!r}"
                         for name in ("task", "created_at_ms", "deadline_ms", "quorum")
                         if getattr(r, name) != getattr(qe, name)]
                self.flag(c, "result_query_mismatch", "; ".join(wrong),
                          ref("queries", q.partition, q.offset))
        if ids != sorted(set(ids)):
            self.flag(c, "included_order", f"included ids {ids} are not unique and sorted")
        if r.late:
            for pid in sorted(set(ids) & set(r.late)):
                self.flag(c, "late_response_used", "listed as late and also included", pid=pid)
        expected_status = status_of(len(ids), r.quorum,
                                    len(r.missing) + len(r.late) + len(r.excluded))
        if r.status == "rejected":
            if ids or r.excluded or not r.reason:
                self.flag(c, "status_mismatch", "a rejected result must include no answer "
                          "and give its reason")
        elif r.status != expected_status:
            self.flag(c, "status_mismatch", f"status {r.status!r}, counts give "
                      f"{expected_status!r}")
        if r.strategy not in STRATEGIES:
            self.flag(c, "unknown_strategy", f"strategy {r.strategy!r} is not one of "
                      f"{sorted(STRATEGIES)}")

        base = self.rows.base
        listings = self._listings
        for a in r.included:
            key = (a.partition, a.offset)
            found = base.get(key)
            index = a.index
            if found is None:
                c.usable = False
                if self.log.partial and a.offset < self.log.response_starts.get(a.partition, 0):
                    self.counts["responses_out_of_range"] += 1
                else:
                    self.flag(c, "unknown_response", "no response batch at this position",
                              ref("responses", a.partition, a.offset, index),
                              pid=a.participant_id)
                continue
            _, pid, answered, produced_at, width, start = found
            if index >= len(answered):
                c.usable = False
                self.flag(c, "unknown_response", f"batch has {len(answered)} answers, no row "
                          f"{index}", ref("responses", a.partition, a.offset, index),
                          pid=a.participant_id)
                continue
            if pid != a.participant_id:
                self.flag(c, "response_participant_mismatch", f"the batch is {pid}'s",
                          ref("responses", a.partition, a.offset, index),
                          pid=a.participant_id)
            if answered[index] != qid:
                self.flag(c, "response_query_mismatch", f"row {index} answers {answered[index]}",
                          ref("responses", a.partition, a.offset, index),
                          pid=a.participant_id)
            if produced_at > deadline:
                self.flag(c, "response_after_deadline",
                          f"produced at {produced_at}, {produced_at - deadline} ms after the "
                          f"deadline {deadline}", ref("responses", a.partition, a.offset, index),
                          pid=a.participant_id)
            listing = listings.get(key)
            if listing is None:
                listings[key] = [(c, index)]
            else:
                listing.append((c, index))
            why = self.screened(key)[index]
            if why is not None:
                self.flag(c, "implausible_answer_used", f"row is {why} for the participant's "
                          "registered privacy", ref("responses", a.partition, a.offset, index),
                          pid=a.participant_id)
            if c.width and width != c.width:
                c.usable = False
                self.flag(c, "aggregate_mismatch", "the listed rows have different widths")
            c.width = width
            c.flat.append(start + index)
        for e in r.excluded:
            key = (e.partition, e.offset)
            self.counts["answers_excluded"] += 1
            self.counts[f"answers_excluded_{e.reason}"] += 1
            found = base.get(key)
            there = ref("responses", e.partition, e.offset, e.index)
            if found is None or e.index >= len(found[2]):
                if not (self.log.partial
                        and e.offset < self.log.response_starts.get(e.partition, 0)):
                    self.flag(c, "unknown_response", "no excluded answer at this position",
                              there, pid=e.participant_id)
                continue
            if found[1] != e.participant_id or found[2][e.index] != qid:
                self.flag(c, "response_query_mismatch", "the excluded row is not this "
                          "participant's answer to this query", there, pid=e.participant_id)
            elif self.screened(key)[e.index] is None:
                self.flag(c, "wrong_exclusion", f"excluded as {e.reason}, but the row is "
                          "plausible for the participant's registered privacy", there,
                          pid=e.participant_id)
        return c

    def signatures(self) -> None:
        """Every listed batch must verify with a key registered for its participant: each
        batch once (~65 µs of Ed25519), however many results list it."""
        for key, listings in self._listings.items():
            logged = self.rows.base[key][0]
            pid = logged.event.participant_id
            keys = self._valid_keys(pid, logged.event.produced_at_ms)
            self.counts["signatures_verified"] += 1
            if keys is None:
                self.add("unknown_participant", f"{pid} is not in the registry"
                         + (" (as admitted by the operator)" if self.periods is not None else ""),
                         participant_id=pid, refs=(ref("responses", *key),))
                continue
            # On an open registry any key the participant registered (a rotated key still
            # signed older batches); with an operator, the key valid when it was produced.
            if self.genuine(key):
                continue
            which = "registered" if self.periods is None else "valid"
            for c, index in listings:
                self.flag(c, "bad_signature", f"batch {logged.event.batch_id} does not "
                          f"verify with a key {which} for {pid} at "
                          f"{logged.event.produced_at_ms}",
                          ref("responses", key[0], key[1], index), pid=pid)

    def _recompute(self, checked: list[_Checked]) -> None:
        """Aggregates of every result, in batches of equal shape; each checked bit for bit."""
        groups: dict[tuple[int, int], list[_Checked]] = defaultdict(list)
        for c in checked:
            if not c.usable:
                continue
            if c.flat:
                groups[(len(c.flat), c.width)].append(c)
            else:
                r = c.logged.event
                if r.aggregate is not None or r.prediction is not None or \
                        r.confidence is not None:
                    self.flag(c, "aggregate_mismatch",
                              "no answers included, yet an aggregate is given")
        for (k, width), members in groups.items():
            idx = np.fromiter((i for c in members for i in c.flat), dtype=np.intp,
                              count=len(members) * k)
            x = self.rows.matrices[width][idx].reshape(len(members), k, width)
            finite: npt.NDArray[np.bool_] = np.asarray(np.isfinite(x).all(axis=(1, 2)))
            with np.errstate(all="ignore"):
                vector, prediction, confidence = soft_vote_batch(x)
                agree = loo_agreement_batch(x)
            stds = np.array([[self.noise_std(p) for p in c.ids] for c in members])
            with np.errstate(all="ignore"):
                close = suspicious(np.where(np.isfinite(x), x, 0.0), stds)
            first = int(np.argmax(finite))
            fast = bool(finite[first]) and batch_matches(
                x[first], vector[first], int(prediction[first]), float(confidence[first]),
                agree[first])
            for i, c in enumerate(members):
                if not finite[i]:
                    c.usable = False
                    self.flag(c, "aggregate_mismatch", "the listed rows contain NaN or Inf")
                    continue
                c.rows = x[i]
                c.close_pair = bool(close[i])
                r = c.logged.event
                if fast:
                    c.agree = agree[i]
                    t = r.aggregate
                    if (r.strategy == "soft_vote" and t is not None and t.dtype == "<f8"
                            and t.shape == (width,) and t.data == vector[i].tobytes()
                            and r.prediction == prediction[i]
                            and r.confidence == confidence[i]):
                        continue
                self._reference(c)

    def noise_std(self, pid: str) -> float:
        """σ·C as registered (the latest entry, as the aggregator's registry view has it)."""
        entry = self.entries.get(pid)
        return 0.0 if entry is None else entry.privacy.clip_norm * entry.privacy.noise_multiplier

    def copies(self, checked: list[_Checked]) -> None:
        """Every result's copy flags, recomputed over its included and copied rows: each
        copied answer must be a copy (`flag_copies` names it) and no included one may be."""
        matrices, base = self.rows.matrices, self.rows.base
        for c in checked:
            r = c.logged.event
            if not r.copied and not c.close_pair:
                continue
            self.counts["copies_recorded"] += len(r.copied)
            if c.rows is None and c.flat:
                continue  # its rows are unusable: flagged already
            ids, rows = list(c.ids), [] if c.rows is None else list(c.rows)
            positions = [(a.offset, a.index) for a in r.included]
            found = True
            for a in r.copied:
                got = base.get((a.partition, a.offset))
                if (got is None or a.index >= len(got[2]) or got[1] != a.participant_id
                        or got[2][a.index] != r.query_id or (rows and got[4] != len(rows[0]))):
                    found = False
                    self.flag(c, "copy_flag_mismatch", "listed as copied, but no such answer "
                              "of this participant to this query is in the log",
                              ref("responses", a.partition, a.offset, a.index),
                              pid=a.participant_id)
                    continue
                ids.append(a.participant_id)
                rows.append(matrices[got[4]][got[5] + a.index])
                positions.append((a.offset, a.index))
            if not found or len(rows) < 2:
                continue
            flags = flag_copies(np.stack(rows), [self.noise_std(p) for p in ids], positions)
            want = sorted((ids[f.index], ids[f.of]) for f in flags)
            have = sorted((a.participant_id, a.copy_of) for a in r.copied)
            if want != have:
                self.flag(c, "copy_flag_mismatch", f"recorded copies {have}, recomputed {want}")

    def _reference(self, c: _Checked) -> None:
        """The arbiter: `aggregate(rows, result.strategy)`, compared bit for bit."""
        r = c.logged.event
        if r.strategy not in STRATEGIES or c.rows is None:
            return
        params = {"weights": r.weights} if r.weights is not None else {}
        agg = aggregate(c.rows, r.strategy, **params)
        t = r.aggregate
        if (t is None or t.dtype != "<f8" or t.shape != agg.vector.shape
                or t.data != agg.vector.tobytes()):
            self.flag(c, "aggregate_mismatch", f"recorded aggregate differs from {r.strategy} "
                      f"over the {len(c.flat)} listed rows")
        if r.prediction != agg.prediction:
            self.flag(c, "prediction_mismatch",
                      f"prediction {r.prediction}, recomputed {agg.prediction}")
        if r.confidence != agg.confidence:
            self.flag(c, "confidence_mismatch",
                      f"confidence {r.confidence!r}, recomputed {agg.confidence!r}")

    # -- incentives ----------------------------------------------------------------------------

    def windows(self, checked: list[_Checked]) -> list[WindowAudit]:
        by_window: dict[tuple[int, int], list[_Checked]] = defaultdict(list)
        for c in checked:
            w = c.logged.event.window
            by_window[(w.partition, w.seq)].append(c)
        incentives: dict[tuple[int, int], list[Logged[Incentive]]] = defaultdict(list)
        merit: dict[tuple[int, int], list[Logged[Incentive]]] = defaultdict(list)
        for logged in self.log.incentives:
            iw = logged.event.window
            target = merit if logged.event.method == MERIT_METHOD else incentives
            target[(iw.partition, iw.seq)].append(logged)
        last_seq: dict[int, int] = {}
        for p, seq in by_window.keys() | incentives.keys():
            last_seq[p] = max(last_seq.get(p, seq), seq)
        audits = []
        for key in sorted(by_window.keys() | incentives.keys()):
            results = sorted(by_window.get(key, []),
                             key=lambda c: (c.logged.partition, c.logged.offset))
            audits.append(self._window(key, results, incentives.get(key, []),
                                       key[1] < last_seq[key[0]]))
        for key, recorded in sorted(merit.items()):
            self._merit_window(key, by_window.get(key, []), recorded, incentives.get(key, []))
        self.counts["windows"] = len(audits)
        self.counts["windows_closed"] = sum(1 for w in audits if w.closed)
        self.counts["windows_verified"] = sum(1 for w in audits if w.verified)
        self.counts["incentives"] = len(self.log.incentives)
        return audits

    def _window(self, key: tuple[int, int], results: list[_Checked],
                recorded: list[Logged[Incentive]], superseded: bool) -> WindowAudit:
        audit = WindowAudit(partition=key[0], seq=key[1], results=len(results),
                            closed=bool(recorded), verified=False)
        if results:
            audit.first_completed_at_ms = results[0].logged.event.completed_at_ms
            audit.last_completed_at_ms = results[-1].logged.event.completed_at_ms
        for logged in recorded:
            audit.rewards.setdefault(logged.event.participant_id, logged.event.reward)
            audit.budget = logged.event.budget
        participants: set[str] = set()
        for c in results:
            r = c.logged.event
            participants.update(c.ids)
            participants.update(r.late)
            participants.update(r.missing)
            participants.update(d.participant_id for d in r.declined)
        if not recorded:
            # Open windows are normal at the end of the log; a later window of the same
            # partition means this one was closed, and its incentives must be in the log.
            if superseded and participants and not self.log.partial:
                self.add("missing_incentive", "a later window exists but this one has no "
                         "incentives", window=key)
            return audit
        if not results or any(not c.usable or len(set(c.ids)) != len(c.ids)
                              for c in results) or (
                self.log.partial and len(results) < recorded[0].event.window.results):
            if not results and not self.log.partial:
                self.add("incentive_window_mismatch", "incentives for a window without "
                         "results", window=key,
                         refs=tuple(ref("incentives", i.partition, i.offset) for i in recorded))
            self.counts["windows_unverifiable"] += 1
            return audit

        methods = sorted({i.event.method for i in recorded})
        method = methods[0]
        audit.method = method
        if len(methods) > 1:
            self.add("incentive_method_mismatch", f"one window, several methods {methods}",
                     window=key)
        if method not in INCENTIVE_METHODS:
            self.add("unknown_incentive_method", f"method {method!r} is not one of "
                     f"{sorted(INCENTIVE_METHODS)}", window=key)
            return audit
        budgets = sorted({i.event.budget for i in recorded})
        if len(budgets) > 1:
            self.add("incentive_budget_mismatch", f"one window, several budgets {budgets}",
                     window=key)
        audit.verified = True
        extra = [i.event.participant_id for i in recorded]
        fast = None
        if method == "loo_agreement" and all(c.agree is not None or c.rows is None
                                             for c in results):
            fast = _replay_fast(key, results, extra, budgets, method)
        if fast is not None and all(
                not _incentive_differs(i.event, fast[0][i.event.budget][i.event.participant_id])
                for i in recorded):
            audit.scores = fast[1]
            self._seen_incentives(key, recorded, participants)
            return audit

        # The arbiter: IncentiveWindow itself, the same order, the same float64 sums.
        replay = IncentiveWindow(key[0], key[1], 0, method)
        for c in results:
            replay.add(c.logged.event, c.ids, c.rows)
        for pid in extra:
            # Answers that came after their result are counted late and appear in no result;
            # such a participant still got an incentive (score 0) and takes part in the split.
            replay.counts.setdefault(pid, {})
        audit.scores = replay.current_scores()
        closed = {b: {i.participant_id: i for i in replay.close(budget=b)} for b in budgets}
        for logged in recorded:
            inc = logged.event
            for kind, message in _incentive_differs(inc, closed[inc.budget][inc.participant_id]):
                self.add(kind, message, participant_id=inc.participant_id, window=key,
                         refs=(ref("incentives", logged.partition, logged.offset),))
        self._seen_incentives(key, recorded, participants)
        return audit

    def _merit_window(self, key: tuple[int, int], results: list[_Checked],
                      recorded: list[Logged[Incentive]],
                      label_free: list[Logged[Incentive]]) -> None:
        """Recompute `shapley` events from the labels below their feedback horizon."""
        self.counts["merit_incentives"] += len(recorded)
        first = recorded[0].event
        if self.log.partial and len(results) < first.window.results:
            self.counts["windows_unverifiable"] += 1  # part of the window is outside the slice
            return
        horizon = first.feedback_horizon or 0
        labels = window_labels(((f.partition, f.offset, f.event.query_id, f.event.label)
                                for f in self.log.feedback), key[0], horizon)
        seen: set[str] = set()
        queries = []
        for c in sorted(results, key=lambda c: (c.logged.partition, c.logged.offset)):
            r = c.logged.event
            if r.query_id in seen or not r.included or r.query_id not in labels:
                continue
            seen.add(r.query_id)
            if c.rows is None:
                self.counts["windows_unverifiable"] += 1
                return
            queries.append(LabeledQuery(participant_ids=c.ids, outputs=c.rows,
                                        label=labels[r.query_id]))
        rewards = {i.event.participant_id: i.event.reward for i in label_free}
        want = {i.participant_id: i for i in merit_incentives(
            first.window, queries, rewards, budget=first.budget, feedback_horizon=horizon)}
        got: set[str] = set()
        for logged in recorded:
            inc = logged.event
            refs = (ref("incentives", logged.partition, logged.offset),)
            if inc.participant_id in got:
                self.add("duplicate_incentive", "a second merit incentive for one participant "
                         "and window", participant_id=inc.participant_id, window=key, refs=refs)
                continue
            got.add(inc.participant_id)
            expected = want.get(inc.participant_id)
            if expected is None:
                self.add("incentive_score_mismatch", "a merit incentive for a participant "
                         "in no labeled result of the window",
                         participant_id=inc.participant_id, window=key, refs=refs)
                continue
            for name in ("score", "reward", "labeled", "stderr", "skill_fairness",
                         "rank_correlation"):
                if getattr(inc, name) != getattr(expected, name):
                    kind: Kind = ("incentive_reward_mismatch" if name == "reward"
                                  else "incentive_score_mismatch")
                    self.add(kind, f"merit {name} {getattr(inc, name)!r}, recomputed "
                             f"{getattr(expected, name)!r}", participant_id=inc.participant_id,
                             window=key, refs=refs)
        for pid in sorted(want.keys() - got):
            self.add("missing_incentive", "no merit incentive for a participant of a labeled "
                     "window", participant_id=pid, window=key)

    def _seen_incentives(self, key: tuple[int, int], recorded: list[Logged[Incentive]],
                         participants: set[str]) -> None:
        seen: dict[str, Logged[Incentive]] = {}
        for logged in recorded:
            pid = logged.event.participant_id
            if pid in seen:
                self.add("duplicate_incentive", "a second incentive for one participant and "
                         "window", participant_id=pid, window=key,
                         refs=(ref("incentives", seen[pid].partition, seen[pid].offset),
                               ref("incentives", logged.partition, logged.offset)))
            else:
                seen[pid] = logged
        for pid in sorted(participants - seen.keys()):
            self.add("missing_incentive", "took part in the window but got no incentive",
                     participant_id=pid, window=key)

    # -- merit vs label-free ---------------------------------------------------------------------

    def merit(self, windows: list[WindowAudit], checked: list[_Checked]) -> None:
        if not self.labels:
            return
        by_window: dict[tuple[int, int], list[_Checked]] = defaultdict(list)
        first: set[str] = set()
        for c in checked:
            qid = c.logged.event.query_id
            if qid in first:
                continue  # a duplicate result says nothing more about merit
            first.add(qid)
            if c.rows is not None and qid in self.labels:
                w = c.logged.event.window
                by_window[(w.partition, w.seq)].append(c)
        for audit in windows:
            labelled = by_window.get((audit.partition, audit.seq), [])
            audit.labelled = len(labelled)
            participants = sorted({pid for c in labelled for pid in c.ids})
            if not labelled or not 2 <= len(participants) <= MAX_EXACT_SHAPLEY:
                continue
            outputs: list[tuple[Sequence[str], npt.ArrayLike]] = [
                (c.ids, c.rows) for c in labelled if c.rows is not None]
            value = ensemble_accuracy_value(
                outputs, [self.labels[c.logged.event.query_id] for c in labelled])
            audit.merit = shapley_exact(participants, value)
            if audit.scores:
                rho = spearman(audit.scores, audit.merit)
                audit.spearman = None if math.isnan(rho) else rho

    # -- privacy ---------------------------------------------------------------------------------

    def privacy(self, samples: int) -> list[PrivacySpend]:
        per: dict[str, list[ResponseBatch]] = defaultdict(list)
        seen: set[tuple[str, str]] = set()
        for logged in self.log.responses:
            b = logged.event
            if (b.participant_id, b.batch_id) in seen:
                continue  # a redelivered batch publishes nothing new
            if not self.genuine((logged.partition, logged.offset)):
                # Not signed by the participant: it spent nothing of its budget (the
                # aggregator dead-lettered it; `bad_signature` flags it if a result uses it).
                self.counts["unsigned_batches_not_counted"] += 1
                continue
            seen.add((b.participant_id, b.batch_id))
            per[b.participant_id].append(b)
        out = []
        for pid in sorted(per):
            batches = sorted(per[pid], key=lambda b: b.produced_at_ms)
            out.append(self._spend(pid, batches, samples))
        return out

    def _spend(self, pid: str, batches: list[ResponseBatch], samples: int) -> PrivacySpend:
        """Answers per mechanism, as the participant's ledger counts them, priced by the one
        ε function. An answer that repeats, bit for bit, an earlier answer of the same
        participant to the same input under the same mechanism is a replay from its reuse
        cache: post-processing, free. Fresh noise on a repeated input is NOT free (averaging
        such answers strips the noise), and it is counted like any other answer."""
        mechanisms = sorted({Mechanism.from_privacy(b.privacy) for b in batches}, key=repr)
        sigmas = sorted({m.noise_multiplier for m in mechanisms})
        entry = self.entries.get(pid)
        budget = entry.budget if entry is not None else None
        per_mechanism: Counter[Mechanism] = Counter()
        cumulative: list[tuple[int, Counter[Mechanism]]] = []
        released: dict[tuple[bytes, Mechanism], set[bytes]] = defaultdict(set)
        reused = 0
        for b in batches:
            mechanism = Mechanism.from_privacy(b.privacy)
            rows = b.outputs.to_numpy()
            for qid, row in zip(b.answered, rows, strict=True):
                query = self.queries.get(qid)
                if query is not None:
                    seen = released[(query.event.input.data, mechanism)]
                    if row.tobytes() in seen:
                        reused += 1
                        continue
                    seen.add(row.tobytes())
                per_mechanism[mechanism] += 1
            cumulative.append((b.produced_at_ms, Counter(per_mechanism)))
        answers = sum(per_mechanism.values())
        spend = PrivacySpend(participant_id=pid, answers=answers, batches=len(batches),
                             noise_multipliers=sigmas,
                             mechanisms=[m.describe() for m in mechanisms], reused=reused,
                             delta=None, epsilon_max=None, epsilon=None, max_answers=None,
                             exceeded=False)
        if budget is None:
            return spend
        spend.delta, spend.epsilon_max = budget.delta, budget.epsilon_max
        spend.epsilon = epsilon(per_mechanism, budget.delta)
        if len(mechanisms) == 1:
            spend.max_answers = max_answers(PrivacyBudget(budget.epsilon_max, budget.delta),
                                            mechanisms[0])
        spend.exceeded = spend.epsilon > budget.epsilon_max
        if spend.exceeded:
            cap = "" if spend.max_answers is None else f"; {spend.max_answers} answers fit"
            self.add("budget_exceeded", f"{answers} answers give ε = {spend.epsilon:.4g} at "
                     f"δ = {budget.delta:g}; the registered budget is ε_max = "
                     f"{budget.epsilon_max:g} under {', '.join(spend.mechanisms)}{cap}",
                     participant_id=pid)
        if samples > 0 and cumulative:
            step = max(1, math.ceil(len(cumulative) / samples))
            picked = cumulative[step - 1::step]
            if picked[-1] is not cumulative[-1]:
                picked.append(cumulative[-1])
            spend.series = [(t, epsilon(c, budget.delta)) for t, c in picked]
        return spend

    # -- odds and ends ---------------------------------------------------------------------------

    def undecodable(self) -> dict[str, int]:
        counted: Counter[str] = Counter()
        for u in self.log.undecodable:
            counted[f"{u.topic} {u.reason}"] += 1
            if u.topic in _OUTPUT_TOPICS:
                self.add("malformed_record", f"{u.reason}: {u.detail}",
                         refs=(ref(u.topic, u.partition, u.offset),))
        return dict(sorted(counted.items()))


def _incentive_differs(inc: Incentive, want: Incentive) -> list[tuple[Kind, str]]:
    """What a recorded incentive gets wrong against its recomputation (empty: nothing)."""
    out: list[tuple[Kind, str]] = []
    if inc.score != want.score:
        out.append(("incentive_score_mismatch",
                    f"score {inc.score!r}, recomputed {want.score!r}"))
    if inc.reward != want.reward:
        out.append(("incentive_reward_mismatch",
                    f"reward {inc.reward!r}, recomputed {want.reward!r}"))
    got, exp = inc.counts, want.counts
    wrong = [f"{name} {getattr(got, name)} != {getattr(exp, name)}"
             for name in ("included", "missing", "declined", "excluded")
             if getattr(got, name) != getattr(exp, name)]
    if got.late < exp.late:  # answers after the result was out add to it, by timing
        wrong.append(f"late {got.late} < {exp.late} listed late in the window's results")
    if wrong:
        out.append(("incentive_counts_mismatch", "; ".join(wrong)))
    w, x = inc.window, want.window
    wrong = [f"{name} {getattr(w, name)} != {getattr(x, name)}"
             for name in ("results", "first_completed_at_ms", "last_completed_at_ms")
             if getattr(w, name) != getattr(x, name)]
    if wrong:
        out.append(("incentive_window_mismatch", "; ".join(wrong)))
    return out


def _replay_fast(key: tuple[int, int], results: Sequence[_Checked], extra: Iterable[str],
                 budgets: Iterable[float], method: str
                 ) -> tuple[dict[float, dict[str, Incentive]], dict[str, float]]:
    """`IncentiveWindow` over the window's results, from per-row scores computed in batches.

    Same sums in the same order, same counts, the same `split_rewards`; used only to accept
    recorded incentives that equal it, everything else goes to IncentiveWindow itself.
    """
    scores: dict[str, float] = {}
    counts: dict[str, dict[str, int]] = {}

    def bump(pid: str, name: str) -> None:
        row = counts.get(pid)
        if row is None:
            row = counts[pid] = {"included": 0, "late": 0, "missing": 0, "declined": 0,
                                 "excluded": 0}
        row[name] += 1

    for c in results:
        r = c.logged.event
        if c.rows is not None and c.agree is not None:
            for pid, s in zip(c.ids, c.agree.tolist(), strict=True):
                scores[pid] = scores.get(pid, 0.0) + s
        for pid in c.ids:
            bump(pid, "included")
        for pid in r.late:
            bump(pid, "late")
        for pid in r.missing:
            bump(pid, "missing")
        for d in r.declined:
            bump(d.participant_id, "declined")
        for e in r.excluded:
            bump(e.participant_id, "excluded")
    for pid in extra:
        counts.setdefault(pid, {})
    final = {pid: scores.get(pid, 0.0) for pid in scores.keys() | counts}
    window = Window(partition=key[0], seq=key[1], results=len(results),
                    first_completed_at_ms=results[0].logged.event.completed_at_ms,
                    last_completed_at_ms=results[-1].logged.event.completed_at_ms)
    out: dict[float, dict[str, Incentive]] = {}
    for budget in budgets:
        rewards = split_rewards(final, budget)
        out[budget] = {
            pid: Incentive(participant_id=pid, window=window, method=method, score=final[pid],
                           reward=rewards[pid], budget=budget,
                           counts=IncentiveCounts(**counts.get(pid, {})))
            for pid in final}
    return out, scores


def audit(log: AuditLog, *, grace_ms: int = DEFAULT_GRACE_MS, verify: Verify = verify_batch,
          merit: bool = True, epsilon_samples: int | None = None) -> AuditReport:
    """Check everything the log allows; see the module docstring for what and how.

    `merit`: also compute, per window with fi.feedback labels, the Shapley values of
    ensemble accuracy and their Spearman correlation with the label-free scores (a
    measurement for the report, not a check). `epsilon_samples`: points of each
    participant's ε-over-time series (each an RDP conversion); default 24 with `merit`,
    none without.
    """
    a = _Audit(log, grace_ms, verify)
    checked = a.results()
    a.copies(checked)
    windows = a.windows(checked)
    if merit:
        a.merit(windows, checked)
    spend = a.privacy(epsilon_samples if epsilon_samples is not None else 24 if merit else 0)
    a.signatures()
    undecodable = a.undecodable()
    first: dict[str, Result] = {}
    for logged in log.results:
        first.setdefault(logged.event.query_id, logged.event)
    latencies = [r.completed_at_ms - r.created_at_ms for r in first.values()]
    dlq = Counter(d.error for d in log.dlq)
    sources = Counter(f"{d.error} {d.source_topic or '?'}" for d in log.dlq)
    counts = dict(a.counts)
    counts.update({f"records_{t}": n for t, n in log.records.items()})
    counts.update(records=log.total_records, responses=len(log.responses),
                  feedback=len(log.feedback), participants=len(a.entries), dlq=len(log.dlq),
                  undecodable=len(log.undecodable))
    order = {k: i for i, k in enumerate(KINDS)}
    discrepancies = sorted(a.out, key=lambda d: order[d.kind])  # stable: log order per kind
    return AuditReport(counts=dict(sorted(counts.items())), discrepancies=discrepancies,
                       spend=spend, dlq=dict(sorted(dlq.items())),
                       dlq_sources=dict(sorted(sources.items())), windows=windows,
                       latencies_ms=latencies, undecodable=undecodable, partial=log.partial)


# -- replay under another strategy ---------------------------------------------------------------

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


def replay(log: AuditLog, strategy: str) -> ReplayReport:
    """Recompute the results of the log under `strategy` from the recorded answers.

    Where fi.feedback has a label, compares the accuracy of the recorded results with the
    replayed ones (over the same queries: those replayed and labelled).
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown aggregation strategy {strategy!r}; "
                          f"use one of {', '.join(sorted(STRATEGIES))}")
    batches = {(r.partition, r.offset): r.event for r in log.responses}
    labels = {f.event.query_id: f.event.label for f in log.feedback}
    report = ReplayReport(strategy=strategy)
    strategies: Counter[str] = Counter()
    seen: set[str] = set()
    cache: dict[tuple[int, int], npt.NDArray[Any]] = {}
    for logged in log.results:
        r = logged.event
        if r.query_id in seen:
            continue
        seen.add(r.query_id)
        report.results += 1
        strategies[r.strategy] += 1
        rows = []
        for a in r.included:
            batch = batches.get((a.partition, a.offset))
            if batch is None or a.index >= len(batch.answered):
                break
            m = cache.get((a.partition, a.offset))
            if m is None:
                m = cache[(a.partition, a.offset)] = batch.outputs.to_numpy()
            rows.append(m[a.index])
        else:
            if not rows:
                continue
            x = np.stack(rows).astype(np.float64)
            if not np.isfinite(x).all():
                continue
            prediction = aggregate(x, strategy).prediction
            report.replayed += 1
            report.changed += prediction != r.prediction
            label = labels.get(r.query_id)
            if label is not None:
                report.labelled += 1
                report.recorded_correct += r.prediction == label
                report.replayed_correct += prediction == label
    report.recorded_strategies = dict(sorted(strategies.items()))
    return report
