"""The audit against an independent reference (issue 18): a log written BY HAND here.

`test_audit.py` builds its log with the aggregator's own functions (build_result,
IncentiveWindow) and audits it with the same code, so a maths bug sits on both sides.
Here every number of every result and incentive is stated from first principles: one-hot
answers, whose aggregates are exact fractions (`Fraction`, rounded once to float64, as
numpy does when it sums 0s and 1s and divides once), loo-agreement scores and rewards
counted by hand, and Shapley values from the axioms. The log covers every strategy, a
query naming its own strategy, a decline, a late answer, an answer after its result, a
partial and an insufficient result, and a merit window; the tamper tests change one
recorded number and expect the audit to name it.

The log is written as the wire carries it (issue 13): each query a query block of one
(query id `B.0`), each answer a signed response block, each result a result block, every
record encoded and read back through `fi_stream.audit.add_record` as the auditor reads it;
so the reference also holds the block codecs and converters to bit-exactness.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fi_stream.audit import AuditLog, AuditReport, Logged, TopicKind, add_record, audit
from fi_stream.block_signing import sign_response_block
from fi_stream.signing import public_key_bytes
from schemas import (
    Budget,
    Event,
    Feedback,
    Incentive,
    IncentiveCounts,
    Participant,
    Privacy,
    Result,
    Tensor,
    Window,
    WindowRef,
)
from schemas.blocks import (
    DECLINE_CODES,
    ResponseBlock,
    encode_query_block,
    encode_response_block,
    encode_result_block,
    query_block,
    query_id,
)
from schemas.blocks.convert import result_block_of

IDS = ("p1", "p2", "p3")
C = 10  # classes
T0 = 1_700_000_000_000
# No noise: the one-hot rows ARE the releases (identical noised rows would be flagged as
# copies), and a budget of ε = ∞ is what σ = 0 spends.
PRIVACY = Privacy(clip_norm=1.0, noise_multiplier=0.0)


def onehot(cls: int) -> list[Fraction]:
    return [Fraction(int(i == cls)) for i in range(C)]


# -- the independent reference: the maths of DESIGN §4 on exact fractions --------------------

def mean(rows: list[list[Fraction]], weights: list[Fraction] | None = None) -> list[Fraction]:
    w = weights or [Fraction(1)] * len(rows)
    return [sum((wk * r[i] for wk, r in zip(w, rows, strict=True)), Fraction(0)) / sum(w)
            for i in range(C)]


def argmax(v: list[Fraction]) -> int:
    return max(range(C), key=lambda i: (v[i], -i))  # ties: the lower class


def reference_vector(strategy: str, rows: list[list[Fraction]],
                     weights: list[Fraction] | None) -> list[Fraction]:
    if strategy == "hard_vote":
        return mean([onehot(argmax(r)) for r in rows])
    if strategy == "median":
        assert len(rows) % 2 == 1
        return [sorted(r[i] for r in rows)[len(rows) // 2] for i in range(C)]
    if strategy == "trimmed_mean":
        cut = min(math.floor(Fraction(1, 5) * len(rows)), (len(rows) - 1) // 2)
        cols = [sorted(r[i] for r in rows)[cut:len(rows) - cut] for i in range(C)]
        return [sum(c, Fraction(0)) / len(c) for c in cols]
    if strategy in ("weighted", "reward_weighted", "spectral"):
        return mean(rows, weights)
    # soft_vote; entropy_weighted (a one-hot has entropy 0: weight 1) and js_consensus
    # (used here on unanimous answers only: JS = 0, weight 1) reduce to the mean.
    return mean(rows)


def loo_agreement(rows: list[list[Fraction]]) -> list[int]:
    """1 where k's argmax is the argmax of the mean of the others."""
    return [int(argmax(rows[k]) == argmax(mean(rows[:k] + rows[k + 1:])))
            for k in range(len(rows))]


# -- the hand-written log ----------------------------------------------------------------------

def qid(block_id: str) -> str:
    """The id of the one query of block `block_id`."""
    return query_id(block_id, 0)


@dataclass
class HandLog:
    keys: dict[str, Ed25519PrivateKey] = field(
        default_factory=lambda: {p: Ed25519PrivateKey.generate() for p in IDS})
    log: AuditLog = field(default_factory=AuditLog)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    def raw(self, topic: TopicKind, partition: int, value: bytes, key: str = "") -> int:
        """One record as written; read back as the auditor reads it. Its offset."""
        offset = self.offsets.get((topic, partition), 0)
        self.offsets[(topic, partition)] = offset + 1
        add_record(self.log, topic, partition, offset, value, key=key.encode())
        return offset

    def put(self, topic: TopicKind, partition: int, event: Event) -> Logged[Any]:
        """A `Result` as a result block of one, read back; another event as it is (the
        JSON topics did not change, and JSON cannot carry the ε_max = ∞ registered here)."""
        items: list[Logged[Any]] = getattr(self.log, topic)
        if isinstance(event, Result):
            self.raw(topic, partition, encode_result_block(result_block_of([event])))
        else:
            offset = self.offsets.get((topic, partition), 0)
            self.offsets[(topic, partition)] = offset + 1
            items.append(Logged(event, partition, offset))
            self.log.records[topic] = self.log.records.get(topic, 0) + 1
        return items[-1]

    def ask(self, partition: int, block_id: str, now: int, deadline: int, quorum: int = 1,
            strategy: str | None = None) -> None:
        block = query_block(block_id, "digits", np.zeros((1, 4), np.float32),
                            created_at_ms=now, deadline_ms=deadline, quorum=quorum,
                            strategy=strategy)
        self.raw("queries", partition, encode_query_block(block), block_id)

    def answer(self, pid: str, partition: int, answers: dict[str, int],
               produced_at: int, declined: tuple[str, ...] = ()) -> tuple[int, int]:
        """A signed response block: one row per block of `answers` (its class) and of
        `declined`; where it lies."""
        rows = np.zeros((len(answers) + len(declined), C), np.float32)
        for i, cls in enumerate(answers.values()):
            rows[i, cls] = 1.0
        status = np.array([0] * len(answers)
                          + [DECLINE_CODES.index("budget_exhausted")] * len(declined), "|u1")
        block = ResponseBlock(
            participant_id=pid, batch_id=uuid.uuid4().hex, task="digits", model_version="h",
            privacy=PRIVACY, produced_at_ms=produced_at, query_partition=partition,
            spans=[(b, 1) for b in (*answers, *declined)], outputs=rows, status=status)
        record = sign_response_block(encode_response_block(block), self.keys[pid])
        return partition, self.raw("responses", partition, record, pid)


@dataclass(frozen=True)
class Case:
    """One query: who answers what (class), who declines, who is late, who is missing."""

    qid: str
    strategy: str
    answers: dict[str, int]
    late: tuple[str, ...] = ()  # answered after the deadline
    declined: tuple[str, ...] = ()
    quorum: int = 1
    weights: tuple[int, ...] | None = None


CASES = [
    Case("q01", "soft_vote", {"p1": 3, "p2": 3, "p3": 5}),
    Case("q02", "hard_vote", {"p1": 1, "p2": 1, "p3": 2}),
    Case("q03", "median", {"p1": 4, "p2": 4, "p3": 6}),
    Case("q04", "trimmed_mean", {"p1": 4, "p2": 7, "p3": 7}),
    Case("q05", "weighted", {"p1": 3, "p2": 3, "p3": 5}, weights=(1, 1, 6)),
    Case("q06", "reward_weighted", {"p1": 2, "p2": 8, "p3": 8}, weights=(2, 1, 1)),
    Case("q07", "spectral", {"p1": 2, "p2": 9, "p3": 9}, weights=(1, 0, 0)),
    Case("q08", "entropy_weighted", {"p1": 0, "p2": 0, "p3": 6}),
    Case("q09", "js_consensus", {"p1": 5, "p2": 5}, declined=("p3",)),
    Case("q10", "soft_vote", {"p1": 1, "p2": 1}, late=("p3",)),
    Case("q11", "soft_vote", {"p1": 2, "p2": 3}),  # p3 missing: partial
    Case("q12", "soft_vote", {"p1": 2, "p2": 2}, declined=("p3",)),
    Case("q13", "soft_vote", {"p1": 0, "p2": 0}, quorum=3),  # p3 missing: insufficient
]


def expected_result(case: Case, included: dict[str, tuple[int, int]], done_ms: int,
                    deadline: int) -> Result:
    """The result of `case` (its block's one query), every number by hand."""
    ids = sorted(case.answers)
    rows = [onehot(case.answers[p]) for p in ids]
    w = [Fraction(x) for x in case.weights] if case.weights else None
    v = reference_vector(case.strategy, rows, w)
    pred = argmax(v)
    missing = sorted(set(IDS) - set(case.answers) - set(case.late) - set(case.declined))
    status = ("insufficient" if len(ids) < case.quorum
              else "complete" if not missing and not case.late else "partial")
    return Result(
        query_id=qid(case.qid), task="digits", status=status,
        aggregate=Tensor.from_numpy(np.array([float(x) for x in v])), prediction=pred,
        confidence=float(v[pred] / sum(v)),
        included=[{"participant_id": p, "partition": included[p][0], "offset": included[p][1],
                   "index": 0} for p in ids],
        declined=[{"participant_id": p, "reason": "budget_exhausted"} for p in case.declined],
        late=list(case.late), missing=missing, strategy=case.strategy,
        weights=[float(x) for x in w] if w else None, quorum=case.quorum,
        created_at_ms=deadline - 1000, deadline_ms=deadline, completed_at_ms=done_ms,
        window=WindowRef(partition=0, seq=0))


def build() -> HandLog:
    h = HandLog()
    for pid in IDS:
        h.put("registry", 0, Participant(
            participant_id=pid, public_key=public_key_bytes(h.keys[pid]), tasks=["digits"],
            model_version="h", privacy=PRIVACY, budget=Budget(epsilon_max=math.inf, delta=1e-5),
            registered_at_ms=T0))
    scores = dict.fromkeys(IDS, 0)
    counts = {p: dict.fromkeys(("included", "late", "missing", "declined"), 0) for p in IDS}
    now = T0
    for case in CASES:
        deadline = now + 1000
        h.ask(0, case.qid, now, deadline, case.quorum, case.strategy)
        refs = {}
        for pid, cls in case.answers.items():
            refs[pid] = h.answer(pid, 0, {case.qid: cls}, now + 10)
        for pid in case.declined:
            h.answer(pid, 0, {}, now + 10, declined=(case.qid,))
        for pid in case.late:
            h.answer(pid, 0, {case.qid: 0}, deadline + 1)  # one ms too late
        done = now + 20 if set(case.answers) | set(case.declined) | set(case.late) == set(
            IDS) else deadline
        h.put("results", 0, expected_result(case, refs, done, deadline))
        ids = sorted(case.answers)
        for p, s in zip(ids, loo_agreement([onehot(case.answers[p]) for p in ids]),
                        strict=True):
            scores[p] += s
            counts[p]["included"] += 1
        for p in case.late:
            counts[p]["late"] += 1
        for p in case.declined:
            counts[p]["declined"] += 1
        for p in set(IDS) - set(case.answers) - set(case.late) - set(case.declined):
            counts[p]["missing"] += 1
        now = done + 5
    # An answer to q11 after its result was out: counted late (by timing), used nowhere.
    h.answer("p3", 0, {"q11": 4}, now)
    counts["p3"]["late"] += 1
    # loo-agreement by hand (p1, p2, p3): q01-q03, q05 and q08 1,1,0 (p3's others agree on
    # another class); q04, q06, q07 0,0,0 (the lone one's others say another class, each of
    # the pair's others tie, the lower class wins: the lone one's); q09, q10, q12, q13
    # 1,1,-; q11 0,0,-  →  p1 9, p2 9, p3 0. (Chosen so that the rewards are exact in
    # binary: the audit compares bit for bit, and rounding s/top, Σ and the share in turn
    # is the production's business, not a fact a reference can state.)
    assert scores == {"p1": 9, "p2": 9, "p3": 0}
    window = Window(partition=0, seq=0, results=len(CASES),
                    first_completed_at_ms=h.log.results[0].event.completed_at_ms,
                    last_completed_at_ms=h.log.results[-1].event.completed_at_ms)
    # Rewards: 100 · s / Σs with Σs = 18: 50, 50, 0.
    for pid in IDS:
        share = Fraction(scores[pid], 18)
        h.put("incentives", 0, Incentive(
            participant_id=pid, window=window, method="loo_agreement",
            score=float(scores[pid]), reward=float(100 * share), budget=100.0,
            counts=IncentiveCounts(**counts[pid])))
    _merit_window(h, now + 100)
    return h


def _merit_window(h: HandLog, now: int) -> None:
    """Partition 1: two labeled queries; p1 right (class 0), p2 and p3 wrong (5, 7).

    By hand: v(S) = 1 when p1 ∈ S (with one other, the tie 0 vs 5 or 7 goes to class 0),
    else 0 ({p2, p3} ties 5 vs 7 → 5). p2 and p3 are null players, so Shapley φ = (1, 0, 0)
    and the merit rewards (100, 0, 0). loo-agreement gives everyone 0 (each one's others
    tie on a class it does not say), so the label-free rewards are (0, 0, 0): skill fairness
    and ρ are undefined (None).
    """
    answers = {"p1": 0, "p2": 5, "p3": 7}
    results = []
    for block_id in ("m1", "m2"):
        deadline = now + 1000
        h.ask(1, block_id, now, deadline)
        refs = {p: h.answer(p, 1, {block_id: c}, now + 10) for p, c in answers.items()}
        r = expected_result(Case(block_id, "soft_vote", answers), refs, now + 20, deadline)
        results.append(h.put("results", 1, r.model_copy(
            update={"window": WindowRef(partition=1, seq=0)})))
        now += 30
    for block_id in ("m1", "m2"):
        h.put("feedback", 1, Feedback(query_id=qid(block_id), label=0, created_at_ms=now))
    window = Window(partition=1, seq=0, results=2,
                    first_completed_at_ms=results[0].event.completed_at_ms,
                    last_completed_at_ms=results[1].event.completed_at_ms)
    for pid in IDS:
        h.put("incentives", 1, Incentive(
            participant_id=pid, window=window, method="loo_agreement", score=0.0, reward=0.0,
            budget=100.0, counts=IncentiveCounts(included=2)))
    for pid, phi in zip(IDS, (1.0, 0.0, 0.0), strict=True):
        h.put("incentives", 1, Incentive(
            participant_id=pid, window=window, method="shapley", score=phi,
            reward=100.0 * phi, budget=100.0, counts=IncentiveCounts(included=2), labeled=2,
            feedback_horizon=2, stderr=None, skill_fairness=None, rank_correlation=None))


def kinds(report: AuditReport) -> set[str]:
    return {d.kind for d in report.discrepancies}


@pytest.fixture
def hand() -> HandLog:
    return build()


def test_the_hand_written_log_audits_clean(hand: HandLog) -> None:
    report = audit(hand.log)
    assert report.ok, [d.line() for d in report.discrepancies]
    c = report.counts
    assert c["queries"] == c["results"] == len(CASES) + 2
    assert c["merit_incentives"] == 3
    assert {r.event.strategy for r in hand.log.results} >= {
        "soft_vote", "hard_vote", "median", "trimmed_mean", "weighted", "reward_weighted",
        "spectral", "entropy_weighted", "js_consensus"}


def _tamper(log: AuditLog, topic: str, match: Any, **update: Any) -> None:
    items: list[Logged[Any]] = getattr(log, topic)
    [i] = [k for k, item in enumerate(items) if match(item.event)]
    old = items[i]
    items[i] = Logged(old.event.model_copy(update=update), old.partition, old.offset)


@pytest.mark.parametrize(("field_name", "value", "kind"), [
    ("score", 0.5, "incentive_score_mismatch"),
    ("reward", 90.0, "incentive_reward_mismatch"),
    ("rank_correlation", 1.0, "incentive_score_mismatch"),
    ("skill_fairness", 1.0, "incentive_score_mismatch"),
    ("labeled", 3, "incentive_score_mismatch"),
])
def test_a_changed_merit_incentive_is_flagged(hand: HandLog, field_name: str, value: Any,
                                              kind: str) -> None:
    _tamper(hand.log, "incentives",
            lambda e: e.method == "shapley" and e.participant_id == "p1", **{field_name: value})
    report = audit(hand.log)
    assert kind in kinds(report), [d.line() for d in report.discrepancies]
    assert {d.participant_id for d in report.discrepancies} == {"p1"}


def test_a_missing_merit_incentive_is_flagged(hand: HandLog) -> None:
    hand.log.incentives = [i for i in hand.log.incentives
                           if not (i.event.method == "shapley" and i.event.participant_id == "p2")]
    assert "missing_incentive" in kinds(audit(hand.log))


@pytest.mark.parametrize("block_id", [c.qid for c in CASES])
def test_a_changed_prediction_is_flagged_for_every_strategy(hand: HandLog, block_id: str
                                                            ) -> None:
    r = next(r.event for r in hand.log.results if r.event.query_id == qid(block_id))
    assert r.prediction is not None
    _tamper(hand.log, "results", lambda e: e.query_id == qid(block_id),
            prediction=(r.prediction + 1) % C)
    assert "prediction_mismatch" in kinds(audit(hand.log))


def test_a_result_with_a_late_answer_cannot_claim_to_be_complete(hand: HandLog) -> None:
    _tamper(hand.log, "results", lambda e: e.query_id == qid("q10"), status="complete")
    assert kinds(audit(hand.log)) == {"status_mismatch"}


def test_the_late_count_must_include_answers_after_the_result(hand: HandLog) -> None:
    _tamper(hand.log, "incentives", lambda e: e.participant_id == "p3" and e.window.partition == 0,
            counts=IncentiveCounts(included=8, late=0, missing=2, declined=2))
    assert "incentive_counts_mismatch" in kinds(audit(hand.log))
