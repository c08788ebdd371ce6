"""Audit by replay, without Kafka: a faithful synthetic log audits clean, and every kind of
tampering is found and named (with the ids involved) and nothing else is."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from typing import Any

import numpy as np
import pytest

import fi_stream.audit as audit_mod
import fi_stream.audit.aggregates as aggregates_mod
import fi_stream.batched as batched_mod
from consumers.auditor import Bound
from fi_stream.aggregation import aggregate, soft_vote_batch
from fi_stream.audit import (
    AuditLog,
    AuditReport,
    DeadLetter,
    Logged,
    TopicKind,
    Undecodable,
    audit,
    replay,
)
from fi_stream.audit.page import render_html
from fi_stream.block_signing import sign_response_block
from fi_stream.errors import ConfigError
from fi_stream.incentives import get_method, loo_agreement, loo_agreement_batch
from fi_stream.privacy import Mechanism, PrivacyBudget, epsilon, epsilon_spent, max_answers
from fi_stream.settings import TopicNames
from fi_stream.testing import SyntheticLog, synthetic_log
from schemas import Budget, CopiedAnswer, IncludedAnswer, Privacy, Query, Tensor, encode
from schemas.blocks import (
    ALIGN,
    DECLINE_CODES,
    SIGNATURE_SIZE,
    ResponseBlock,
    decode_response_block,
    encode_response_block,
    split_query_id,
)

PARTICIPANTS = 4


@pytest.fixture(scope="module")
def synthetic() -> SyntheticLog:
    return synthetic_log(queries=160, participants=PARTICIPANTS, partitions=2, batch=8,
                         window_results=20, seed=1)


@pytest.fixture
def log(synthetic: SyntheticLog) -> AuditLog:
    return synthetic.audit_log()  # fresh lists for every test to tamper with


def kinds(report: AuditReport) -> set[str]:
    return {d.kind for d in report.discrepancies}


def found(report: AuditReport, kind: str) -> list[audit_mod.Discrepancy]:
    return [d for d in report.discrepancies if d.kind == kind]


def next_offset(items: list[Any], partition: int) -> int:
    return 1 + max((i.offset for i in items if i.partition == partition), default=-1)


def replace(items: list[Logged[Any]], index: int, **update: Any) -> Logged[Any]:
    old = items[index]
    new = Logged(old.event.model_copy(update=update), old.partition, old.offset)
    items[index] = new
    return new


# -- response blocks: what a participant (or a forger) writes -------------------------------------

def answered_rows(block: ResponseBlock) -> np.ndarray:
    """Record rows of the answered queries: answered index i is record row [i]."""
    return np.flatnonzero(block.status == 0)


def answered_ids(block: ResponseBlock) -> list[str]:
    ids = block.query_ids
    return [ids[r] for r in answered_rows(block).tolist()]


def status_at(raw: bytearray, block: ResponseBlock) -> int:
    """Where `block`'s status buffer starts in its record `raw`: after the outputs (buffer
    offset 0), aligned (docs/wire-format.md)."""
    at = bytes(raw).index(block.outputs.tobytes()) + -(-block.outputs.nbytes // ALIGN) * ALIGN
    assert raw[at:at + len(block.status)] == block.status.tobytes()
    return at


def record_of(block: ResponseBlock, key: Any = None) -> bytes:
    """`block` as a record: signed with `key`, or with the signature it carries."""
    raw = encode_response_block(block)
    return raw if key is None else sign_response_block(raw, key)


def put_response(log: AuditLog, partition: int, record: bytes) -> int:
    """A record appended to fi.responses, read as the auditor reads it; its offset."""
    offset = next_offset(log.responses, partition)
    audit_mod.add_record(log, "responses", partition, offset, record)
    return offset


def set_response(log: AuditLog, index: int, record: bytes) -> None:
    """The record at `log.responses[index]`'s position replaced by `record`."""
    old = log.responses[index]
    log.responses[index] = Logged(decode_response_block(record), old.partition, old.offset)


def one_answer(block: ResponseBlock, qid: str, row: np.ndarray, **update: Any) -> ResponseBlock:
    """A response block that answers only `qid` (with `row`): the rows of its query block
    before it declined, as a record must cover the block from its start."""
    block_id, n = split_query_id(qid)
    status = np.full(n + 1, DECLINE_CODES.index("expired"), np.uint8)
    status[n] = 0
    outputs = np.zeros((n + 1, row.shape[-1]), np.float32)
    outputs[n] = row
    return dataclasses.replace(block, spans=[(block_id, n + 1)], outputs=outputs,
                               status=status, details={}, **update)


def complete_result(log: AuditLog, skip: int = 0) -> int:
    """Index of a result with every participant included."""
    full = [i for i, r in enumerate(log.results) if len(r.event.included) == PARTICIPANTS]
    return full[skip]


# -- a faithful log --------------------------------------------------------------------------------

def test_a_faithful_log_audits_clean(log: AuditLog) -> None:
    report = audit(log)
    assert report.ok, [d.line() for d in report.discrepancies]
    c = report.counts
    assert c["queries"] == c["results"] == c["queries_answered"] == 160
    assert c["windows_closed"] == c["windows_verified"] == c["windows"] > 2
    assert c["signatures_verified"] == len(log.responses)
    assert [s.participant_id for s in report.spend] == ["p1", "p2", "p3", "p4"]
    assert len(report.latencies_ms) == 160
    assert any(w.spearman is not None for w in report.windows)
    assert all(set(w.merit) == set(w.scores) for w in report.windows if w.merit)


def test_batched_maths_is_bitwise_the_reference() -> None:
    rng = np.random.default_rng(7)
    for k in (1, 2, 3, 5, 8, 9, 13):
        for width in (2, 10, 33):
            x = rng.normal(0.1, 0.4, (25, k, width)).astype(np.float32).astype(np.float64)
            x[0] = 0.0  # all-zero rows project to uniform
            x[1, :, :2] = 1.0  # ties
            vector, prediction, confidence = soft_vote_batch(x)
            agree = loo_agreement_batch(x)
            for i in range(len(x)):
                want = aggregate(x[i], "soft_vote")
                assert want.vector.tobytes() == vector[i].tobytes()
                assert want.prediction == prediction[i]
                assert want.confidence == confidence[i]
                assert loo_agreement(x[i]).tobytes() == agree[i].tobytes()


def test_the_reference_decides_when_the_batched_maths_would_not_agree(
        log: AuditLog, monkeypatch: pytest.MonkeyPatch) -> None:
    soft, loo = soft_vote_batch, loo_agreement_batch

    def off(x: Any) -> Any:
        vector, prediction, confidence = soft(x)
        return vector + 1e-9, prediction, confidence

    monkeypatch.setattr(batched_mod, "soft_vote_batch", off)
    monkeypatch.setattr(aggregates_mod, "soft_vote_batch", off)
    monkeypatch.setattr(get_method("loo_agreement"), "add_batch",
                        lambda x: (1 - loo(x)).tolist())
    assert {i.event.method for i in log.incentives} == {"loo_agreement"}
    report = audit(log)
    assert report.ok, [d.line() for d in report.discrepancies]
    assert report.counts["windows_verified"] == report.counts["windows_closed"]


# -- results -------------------------------------------------------------------------------------

def test_a_query_without_result_is_missing_unless_it_is_still_pending(log: AuditLog) -> None:
    q = Query(query_id="q-lost", task="digits", input=Tensor.from_numpy(np.zeros(4, np.float32)),
              created_at_ms=1_000, deadline_ms=2_000)
    log.queries.append(Logged(q, 0, next_offset(log.queries, 0)))
    report = audit(log)
    assert kinds(report) == {"missing_result"}
    [d] = report.discrepancies
    assert d.query_id == "q-lost" and d.refs == (f"queries:0:{log.queries[-1].offset}",)

    log.horizon_ms = 2_000 + 5_000  # the deadline is not grace_ms in the past yet
    report = audit(log, grace_ms=10_000)
    assert report.ok and report.counts["queries_pending"] == 1


def test_a_query_with_two_results_is_named_with_both(log: AuditLog) -> None:
    first = log.results[3]
    copy = Logged(first.event, first.partition, next_offset(log.results, first.partition))
    log.results.append(copy)
    report = audit(log)
    [d] = found(report, "duplicate_result")
    assert d.query_id == first.event.query_id
    assert d.refs == (f"results:{first.partition}:{first.offset}",
                      f"results:{copy.partition}:{copy.offset}")
    assert not found(report, "prediction_mismatch")  # an exact copy recomputes fine
    # Its window now has one result too many: the incentives no longer match the log.
    assert "incentive_window_mismatch" in kinds(report)


def test_a_rewritten_prediction_is_named_apart_from_the_duplicate(log: AuditLog) -> None:
    i = complete_result(log)
    r = log.results[i].event
    assert r.prediction is not None
    in_place = replace(log.results, i, prediction=(r.prediction + 1) % 10)
    report = audit(log)
    assert kinds(report) == {"prediction_mismatch"}
    [d] = report.discrepancies
    assert d.query_id == r.query_id
    assert d.refs == (f"results:{in_place.partition}:{in_place.offset}",)


def test_aggregate_and_confidence_are_checked_bit_for_bit(log: AuditLog) -> None:
    i, j = complete_result(log, 0), complete_result(log, 1)
    r = log.results[i].event
    assert r.aggregate is not None and r.confidence is not None
    v = r.aggregate.to_numpy().copy()
    v[0] = np.nextafter(v[0], np.inf)
    replace(log.results, i, aggregate=Tensor.from_numpy(v))
    c = log.results[j].event.confidence
    assert c is not None
    replace(log.results, j, confidence=np.nextafter(c, 0.0))
    report = audit(log)
    assert kinds(report) == {"aggregate_mismatch", "confidence_mismatch"}
    assert found(report, "aggregate_mismatch")[0].query_id == r.query_id
    assert found(report, "confidence_mismatch")[0].query_id == log.results[j].event.query_id


def test_result_must_agree_with_its_query_and_its_counts(log: AuditLog) -> None:
    replace(log.results, 0, deadline_ms=log.results[0].event.deadline_ms + 1)
    replace(log.results, 1, status="partial")
    replace(log.results, 2, strategy="bogus")
    report = audit(log)
    assert kinds(report) == {"result_query_mismatch", "status_mismatch", "unknown_strategy"}
    assert {d.kind: d.query_id for d in report.discrepancies} == {
        kind: log.results[i].event.query_id for i, kind in enumerate(
            ["result_query_mismatch", "status_mismatch", "unknown_strategy"])}


def test_a_result_without_query(log: AuditLog) -> None:
    qid = log.results[5].event.query_id
    log.queries = [q for q in log.queries if q.event.query_id != qid]
    report = audit(log)
    assert kinds(report) == {"result_without_query"}
    assert report.discrepancies[0].query_id == qid


# -- listed answers ------------------------------------------------------------------------------

def test_an_answer_produced_after_the_deadline_must_not_be_used(
        log: AuditLog, synthetic: SyntheticLog) -> None:
    i = complete_result(log)
    r = log.results[i].event
    a = r.included[0]
    old = next(b for b in log.responses if (b.partition, b.offset) == (a.partition, a.offset))
    row = old.event.outputs[answered_rows(old.event)[a.index]]
    late = one_answer(old.event, r.query_id, row, batch_id="late",
                      produced_at_ms=r.deadline_ms + 1)
    offset = put_response(log, a.partition, record_of(late, synthetic.keys[a.participant_id]))
    moved = IncludedAnswer(participant_id=a.participant_id, partition=a.partition,
                           offset=offset, index=0)
    replace(log.results, i, included=[moved, *r.included[1:]])
    report = audit(log)
    assert kinds(report) == {"response_after_deadline"}
    [d] = report.discrepancies
    assert (d.query_id, d.participant_id) == (r.query_id, a.participant_id)
    assert f"responses:{a.partition}:{offset}#0" in d.refs


def test_a_broken_signature_is_named_for_every_result_that_lists_the_batch(
        log: AuditLog) -> None:
    b = log.responses[3]
    users = [r.event.query_id for r in log.results
             if any((a.partition, a.offset) == (b.partition, b.offset)
                    for a in r.event.included)]
    broken = bytes([b.event.signature[0] ^ 1]) + b.event.signature[1:]
    set_response(log, 3, b.event.signed + broken)
    report = audit(log)
    assert kinds(report) == {"bad_signature"}
    assert sorted(d.query_id or "" for d in report.discrepancies) == sorted(users)
    assert {d.participant_id for d in report.discrepancies} == {b.event.participant_id}


def test_changed_outputs_break_the_signature(log: AuditLog) -> None:
    b = log.responses[0].event
    rows = b.outputs.copy()
    rows[0, 0] += 0.5
    set_response(log, 0, record_of(dataclasses.replace(b, outputs=rows)))  # old signature
    assert "bad_signature" in kinds(audit(log))


@pytest.mark.parametrize("where", ["outputs", "header", "status"])
def test_any_byte_altered_in_a_response_record_is_found(log: AuditLog, where: str) -> None:
    """The signature covers the record's bytes: one byte changed anywhere before it (an
    answer, the header's time, a decline's reason) and every result that lists it is named.
    (A row declined after signing no longer decodes: its outputs are not zero.)"""
    declines = 1 if where == "status" else 0
    i = next(k for k, b in enumerate(log.responses)
             if int((b.event.status != 0).sum()) == declines)
    b = log.responses[i].event
    raw = bytearray(b.signed + b.signature)
    if where == "outputs":
        at = bytes(raw).index(b.outputs[1].tobytes())
        raw[at + 1] ^= 0x01
    elif where == "header":
        field = b'"produced_at_ms":%d' % b.produced_at_ms
        raw[bytes(raw).index(field) + len(field) - 1] ^= 0x01  # its last digit: 1 ms off
    else:
        at = status_at(raw, b)
        [row] = np.flatnonzero(b.status).tolist()
        raw[at + row] = DECLINE_CODES.index("expired")  # the decline's reason rewritten
    set_response(log, i, bytes(raw))
    report = audit(log)
    assert "bad_signature" in kinds(report), where
    assert {d.participant_id for d in found(report, "bad_signature")} == {b.participant_id}


def test_a_response_record_that_no_longer_decodes_leaves_its_answers_unknown(
        log: AuditLog) -> None:
    """A row declined after signing (its outputs not zero) does not decode: the reader
    counts the record as undecodable and every answer a result lists from it is unknown."""
    i = next(k for k, b in enumerate(log.responses) if not (b.event.status != 0).any())
    old = log.responses.pop(i)
    raw = bytearray(old.event.signed + old.event.signature)
    raw[status_at(raw, old.event)] = DECLINE_CODES.index("expired")
    audit_mod.add_record(log, "responses", old.partition, old.offset, bytes(raw))
    users = {r.event.query_id for r in log.results if any(
        (a.partition, a.offset) == (old.partition, old.offset) for a in r.event.included)}
    report = audit(log)
    assert kinds(report) == {"unknown_response"}
    assert {d.query_id for d in report.discrepancies} == users
    assert report.undecodable == {"responses invalid": 1}


def test_records_that_are_not_blocks_are_counted_and_outputs_reported(log: AuditLog) -> None:
    """The old JSON wire, or garbage, on a block topic: undecodable, never an exception;
    on fi.results (the system's own output) a finding."""
    q = Query(query_id="q-json", task="digits", input=Tensor.from_numpy(np.zeros(4, np.float32)),
              created_at_ms=1, deadline_ms=2)
    cases: list[tuple[TopicKind, bytes | None]] = [
        ("queries", encode(q)), ("responses", b"\x00" * 40),
        ("results", b"FIBK" + b"\xff" * 30), ("responses", None)]
    for topic, value in cases:
        audit_mod.add_record(log, topic, 1, next_offset(getattr(log, topic), 1) + 50, value)
    report = audit(log)
    assert kinds(report) == {"malformed_record"}
    assert report.counts["undecodable"] == 4
    assert sum(report.undecodable.values()) == 4
    assert {u.topic for u in log.undecodable} == {"queries", "responses", "results"}


def test_answers_of_an_unregistered_participant(log: AuditLog) -> None:
    log.registry = [p for p in log.registry if p.event.participant_id != "p2"]
    report = audit(log)
    assert kinds(report) == {"unknown_participant"}
    assert {d.participant_id for d in report.discrepancies} == {"p2"}
    assert len(report.discrepancies) == sum(
        1 for b in log.responses if b.event.participant_id == "p2")


def test_listed_answers_must_be_that_participants_answer_to_that_query(log: AuditLog) -> None:
    i, j = complete_result(log, 0), complete_result(log, 1)
    r = log.results[i].event
    a, b = r.included[0], r.included[1]
    swapped = [a.model_copy(update={"offset": b.offset, "index": b.index}),
               b.model_copy(update={"offset": a.offset, "index": a.index}), *r.included[2:]]
    replace(log.results, i, included=swapped)
    s = log.results[j].event
    other = s.included[0]
    replace(log.results, j, included=[other.model_copy(update={"index": other.index ^ 1}),
                                      *s.included[1:]])
    k = complete_result(log, 2)
    t = log.results[k].event
    replace(log.results, k, included=[t.included[0].model_copy(update={"offset": 10**6}),
                                      *t.included[1:]])
    report = audit(log)
    assert {d.query_id for d in found(report, "response_participant_mismatch")} == {r.query_id}
    assert {d.query_id for d in found(report, "response_query_mismatch")} == {s.query_id}
    assert [d.query_id for d in found(report, "unknown_response")] == [t.query_id]


def test_an_answer_listed_late_must_not_be_used(log: AuditLog) -> None:
    i = complete_result(log)
    r = log.results[i].event
    replace(log.results, i, late=[r.included[0].participant_id])
    report = audit(log)
    [d] = found(report, "late_response_used")
    assert (d.query_id, d.participant_id) == (r.query_id, r.included[0].participant_id)


def _copy_answer(log: AuditLog, synthetic: SyntheticLog, i: int) -> IncludedAnswer:
    """p2 re-sends p1's answer to result i's query (a later batch): where it lies."""
    r = log.results[i].event
    a, b = r.included[0], r.included[1]
    assert (a.participant_id, b.participant_id) == ("p1", "p2")
    src = next(x for x in log.responses if (x.partition, x.offset) == (a.partition, a.offset))
    row = src.event.outputs[answered_rows(src.event)[a.index]]
    copy = one_answer(src.event, r.query_id, row, participant_id="p2", batch_id=f"copy{i}")
    offset = put_response(log, a.partition, record_of(copy, synthetic.keys["p2"]))
    return IncludedAnswer(participant_id="p2", partition=a.partition, offset=offset, index=0)


def test_copy_flags_are_recomputed(log: AuditLog, synthetic: SyntheticLog) -> None:
    """A copy used as an answer is named; a copy left out is fine; an honest answer left
    out as a 'copy' is named."""
    used, left_out, framed = (complete_result(log, k) for k in range(3))
    copy = _copy_answer(log, synthetic, used)
    r = log.results[used].event
    replace(log.results, used, included=[r.included[0], copy, *r.included[2:]])
    copy = _copy_answer(log, synthetic, left_out)
    r = log.results[left_out].event
    replace(log.results, left_out, included=[r.included[0], *r.included[2:]],
            copied=[CopiedAnswer(**copy.model_dump(), copy_of="p1")])
    r = log.results[framed].event
    replace(log.results, framed, included=[r.included[0], *r.included[2:]],
            copied=[CopiedAnswer(**r.included[1].model_dump(), copy_of="p1")])
    report = audit(log)
    flagged = found(report, "copy_flag_mismatch")
    assert {d.query_id for d in flagged} == {log.results[used].event.query_id,
                                              log.results[framed].event.query_id}
    assert report.counts["copies_recorded"] == 2


# -- incentives ----------------------------------------------------------------------------------

def _paid(log: AuditLog) -> int:
    return next(i for i, x in enumerate(log.incentives) if x.event.reward > 0)


def test_an_inflated_reward_is_found_in_place_and_as_an_extra_record(log: AuditLog) -> None:
    i = _paid(log)
    inc = log.incentives[i].event
    replace(log.incentives, i, reward=inc.reward * 2)
    report = audit(log)
    assert kinds(report) == {"incentive_reward_mismatch"}
    [d] = report.discrepancies
    assert d.participant_id == inc.participant_id
    assert d.window == (inc.window.partition, inc.window.seq)

    log.incentives[i] = Logged(inc, log.incentives[i].partition, log.incentives[i].offset)
    extra = Logged(inc.model_copy(update={"reward": inc.reward + 1}), 0,
                   next_offset(log.incentives, 0))
    log.incentives.append(extra)
    report = audit(log)
    assert kinds(report) == {"incentive_reward_mismatch", "duplicate_incentive"}
    assert {d.participant_id for d in report.discrepancies} == {inc.participant_id}


def test_scores_and_counts_are_recomputed(log: AuditLog) -> None:
    inc = log.incentives[0].event
    replace(log.incentives, 0, score=inc.score + 1.0)
    counts = log.incentives[1].event.counts
    replace(log.incentives, 1, counts=counts.model_copy(update={"included":
                                                                 counts.included + 1}))
    counts = log.incentives[2].event.counts
    # Answers after a result was out are counted late too: more late is fine, fewer is not.
    replace(log.incentives, 2, counts=counts.model_copy(update={"late": counts.late + 3}))
    report = audit(log)
    assert kinds(report) == {"incentive_score_mismatch", "incentive_counts_mismatch"}


def test_a_participant_late_after_every_result_still_gets_its_zero(log: AuditLog) -> None:
    inc = log.incentives[0].event
    late_only = inc.model_copy(update={
        "participant_id": "p9", "score": 0.0, "reward": 0.0,
        "counts": inc.counts.model_copy(update={"included": 0, "missing": 0, "declined": 0,
                                                "late": 2})})
    log.incentives.append(Logged(late_only, 0, next_offset(log.incentives, 0)))
    assert audit(log).ok


def test_a_missing_incentive(log: AuditLog) -> None:
    gone = log.incentives.pop(0).event
    report = audit(log)
    assert kinds(report) == {"missing_incentive"}
    [d] = report.discrepancies
    assert (d.participant_id, d.window) == (gone.participant_id,
                                            (gone.window.partition, gone.window.seq))


# -- privacy, DLQ, slices ------------------------------------------------------------------------

def test_privacy_spend_is_recomputed_and_checked_against_the_registered_budget(
        log: AuditLog) -> None:
    answers = sum(len(answered_rows(b.event)) for b in log.responses
                  if b.event.participant_id == "p1")
    report = audit(log)
    p1 = report.spend[0]
    assert (p1.participant_id, p1.answers) == ("p1", answers)
    assert p1.epsilon == epsilon_spent(answers, Mechanism(noise_multiplier=0.3), 1e-5)
    assert not p1.exceeded and p1.reused == 0
    assert p1.series[-1][1] == p1.epsilon
    assert audit(log, merit=False).spend[0].series == []  # the plots' data only on request

    i = next(i for i, p in enumerate(log.registry) if p.event.participant_id == "p1")
    replace(log.registry, i, budget=Budget(epsilon_max=2.0, delta=1e-5))
    report = audit(log)
    assert kinds(report) == {"budget_exceeded"}
    assert report.discrepancies[0].participant_id == "p1"
    assert report.spend[0].max_answers == max_answers(
        PrivacyBudget(2.0, 1e-5), Mechanism(noise_multiplier=0.3)) < answers


def test_dead_letters_are_summarised_and_bad_outputs_reported(log: AuditLog) -> None:
    log.dlq = [DeadLetter(0, 0, "malformed", "x.fi.queries", 0, 1, "fi.aggregator"),
               DeadLetter(0, 1, "bad_signature", "x.fi.responses", 1, 4, "fi.aggregator"),
               DeadLetter(0, 2, "malformed", "x.fi.queries", 1, 9, "fi.participant.p1")]
    log.undecodable = [Undecodable("queries", 0, 99, "malformed", "not JSON"),
                       Undecodable("results", 1, 77, "invalid", "fi.result: status")]
    report = audit(log)
    assert report.dlq == {"bad_signature": 1, "malformed": 2}
    assert report.dlq_sources == {"bad_signature x.fi.responses": 1, "malformed x.fi.queries": 2}
    assert kinds(report) == {"malformed_record"}  # a query the DLQ has is not a finding
    assert report.discrepancies[0].refs == ("results:1:77",)
    assert report.undecodable == {"queries malformed": 1, "results invalid": 1}


def test_a_slice_counts_what_lies_outside_it_instead_of_reporting_it(log: AuditLog) -> None:
    cut = 20
    log.partial = True
    log.response_starts = {0: cut, 1: 0}
    log.responses = [b for b in log.responses if b.partition != 0 or b.offset >= cut]
    first = {r.event.query_id for r in log.results[:5]}
    log.queries = [q for q in log.queries if q.event.query_id not in first]
    report = audit(log)
    assert report.ok, [d.line() for d in report.discrepancies]
    assert report.counts["responses_out_of_range"] > 0
    assert report.counts["results_out_of_range"] == 5
    assert report.counts["windows_unverifiable"] > 0


def test_a_slice_of_results_does_not_make_earlier_results_missing(log: AuditLog) -> None:
    log.partial = True
    log.results = log.results[5:]  # the slice starts after the first five results
    report = audit(log)
    assert "missing_result" not in kinds(report)
    assert report.counts["queries_without_result_in_range"] == 5


# -- replay, report --------------------------------------------------------------------------------

def test_replay_under_the_recorded_strategy_changes_nothing(log: AuditLog) -> None:
    same = replay(log, "soft_vote")
    assert (same.results, same.replayed, same.changed) == (160, 160, 0)
    assert same.labelled == len(log.feedback) > 0
    assert same.recorded_accuracy == same.replayed_accuracy
    other = replay(log, "hard_vote")
    assert other.replayed == 160 and other.recorded_strategies == {"soft_vote": 160}
    assert other.replayed_accuracy is not None and 0 <= other.replayed_accuracy <= 1
    with pytest.raises(ConfigError):
        replay(log, "nope")


def test_json_and_html_reports_are_self_contained(log: AuditLog) -> None:
    import json

    replace(log.results, 0, status="partial")
    report = audit(log)
    doc = report.to_json()
    json.dumps(doc, allow_nan=False)
    assert doc["ok"] is False and doc["discrepancy_kinds"] == {"status_mismatch": 1}
    assert {"counts", "privacy", "dlq", "throughput", "windows", "latency_ms"} <= doc.keys()
    page = render_html(report)
    assert page.count("<svg") >= 4 and "status_mismatch" in page
    assert "<script" not in page and "<link" not in page
    assert page.replace('xmlns="http://www.w3.org/2000/svg"', "").count("http") == 0


# -- bounds ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "time_ms", "offsets"), [
    ("1717243200000", 1717243200000, {}),
    ("2024-06-01T12:00:00+00:00", 1717243200000, {}),
    ("queries:0:12, results:1:7", None, {("queries", 0): 12, ("results", 1): 7}),
    ("t-1.fi.responses:2:5,1717243200000", 1717243200000, {("responses", 2): 5}),
])
def test_bounds_parse(text: str, time_ms: int | None, offsets: dict[Any, int]) -> None:
    bound = Bound.parse(text, TopicNames().prefixed("t-1."))
    assert bound.time_ms == time_ms and dict(bound.offsets) == offsets


@pytest.mark.parametrize("text", ["yesterday", "2024-06-01T12:00:00", "1,2", "nope:0:1"])
def test_bad_bounds_say_what_is_expected(text: str) -> None:
    with pytest.raises(ConfigError):
        Bound.parse(text)


def resign(log: AuditLog, synthetic: SyntheticLog, index: int, **update: Any) -> None:
    """The record at `index` changed and signed again by its participant."""
    old = log.responses[index].event
    set_response(log, index, record_of(dataclasses.replace(old, **update),
                                       synthetic.keys[old.participant_id]))


def test_spend_under_several_mechanisms_is_composed_by_the_one_epsilon(
        log: AuditLog, synthetic: SyntheticLog) -> None:
    mine = [i for i, b in enumerate(log.responses) if b.event.participant_id == "p1"]
    teachers = Privacy(mechanism="teachers", teachers=8, clip_norm=1.0, noise_multiplier=0.5)
    for i in mine[: len(mine) // 2]:
        resign(log, synthetic, i, privacy=teachers)
    counts: Counter[Mechanism] = Counter()
    for i in mine:
        b = log.responses[i].event
        counts[Mechanism.from_privacy(b.privacy)] += len(answered_rows(b))
    p1 = audit(log).spend[0]
    assert len(counts) == 2 and p1.epsilon == epsilon(counts, 1e-5)
    assert p1.max_answers is None and len(p1.mechanisms) == 2


def test_a_replayed_answer_is_free_and_fresh_noise_on_a_repeat_is_not(
        log: AuditLog, synthetic: SyntheticLog) -> None:
    """Two queries with the same input: the same noised row again costs nothing (the reuse
    cache); a different row for the same input is a second release and costs."""
    [b0] = [i for i, b in enumerate(log.responses) if b.event.participant_id == "p1"][:1]
    batch = log.responses[b0].event
    first, second = answered_ids(batch)[:2]
    queries = {q.event.query_id: i for i, q in enumerate(log.queries)}
    replace(log.queries, queries[second],
            input=log.queries[queries[first]].event.input)
    before = audit(log, merit=False).spend[0]
    rows = batch.outputs.copy()
    r0, r1 = answered_rows(batch)[:2]
    rows[r1] = rows[r0]
    resign(log, synthetic, b0, outputs=rows)
    after = audit(log, merit=False).spend[0]
    assert (before.reused, after.reused) == (0, 1)
    assert before.epsilon is not None and after.epsilon is not None
    assert after.answers == before.answers - 1 and after.epsilon < before.epsilon


def test_batches_of_one_participant_are_counted_once_even_if_redelivered(
        log: AuditLog) -> None:
    b = log.responses[0]
    log.responses.append(Logged(b.event, b.partition, next_offset(log.responses, b.partition)))
    report = audit(log)
    assert report.ok
    spend = {s.participant_id: s for s in report.spend}[b.event.participant_id]
    assert spend.answers == sum(len(answered_rows(x.event)) for x in log.responses[:-1]
                                if x.event.participant_id == b.event.participant_id)



# -- issue 12 --------------------------------------------------------------------------------------

def test_a_forged_unsigned_batch_spends_nothing_of_an_innocent_participants_budget(
        log: AuditLog) -> None:
    """Before: one forged σ = 0 batch (no valid signature) made p1 show ε = inf."""
    from schemas import Privacy
    b = log.responses[0]
    forged = dataclasses.replace(b.event, batch_id="forged", signature=b"x" * SIGNATURE_SIZE,
                                 privacy=Privacy(clip_norm=1.0, noise_multiplier=0.0))
    put_response(log, b.partition, record_of(forged))
    report = audit(log)
    assert report.ok, [d.line() for d in report.discrepancies]
    spend = {s.participant_id: s for s in report.spend}[b.event.participant_id]
    assert spend.epsilon is not None and math.isfinite(spend.epsilon)
    assert spend.noise_multipliers == [0.3]
    assert report.counts["unsigned_batches_not_counted"] == 1


def test_an_implausible_row_used_in_a_result_is_flagged(log: AuditLog, synthetic: SyntheticLog
                                                        ) -> None:
    i = complete_result(log)
    a = log.results[i].event.included[0]
    j = next(k for k, b in enumerate(log.responses)
             if (b.partition, b.offset) == (a.partition, a.offset))
    block = log.responses[j].event
    rows = block.outputs.copy()
    rows[answered_rows(block)[a.index], 0] = 1e6
    resign(log, synthetic, j, outputs=rows)
    assert "implausible_answer_used" in kinds(audit(log))


def test_exclusions_are_re_checked_and_rejected_results_are_understood(log: AuditLog) -> None:
    from schemas import ExcludedAnswer
    i = complete_result(log)
    r = log.results[i].event
    a = r.included[0]
    wrong = ExcludedAnswer(participant_id=a.participant_id, partition=a.partition,
                           offset=a.offset, index=a.index, reason="implausible_norm")
    replace(log.results, i, excluded=[wrong])
    assert "wrong_exclusion" in kinds(audit(log))

    log2 = log
    replace(log2.results, i, excluded=[], status="rejected", reason=None)
    assert "status_mismatch" in kinds(audit(log2))


def test_merit_and_the_audit_take_the_same_labels() -> None:
    from fi_stream.merit import window_labels
    feedback = [(0, 0, "a", 1), (1, 0, "b", 2), (0, 1, "a", 7), (0, 5, "c", 3)]
    # partition 0 only, below the horizon, the first label of a query wins
    assert window_labels(feedback, 0, horizon=5) == {"a": 1}
    assert window_labels(feedback, 0, horizon=6) == {"a": 1, "c": 3}
