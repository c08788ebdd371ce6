"""Audit by replay on a real broker: a small federation's log audits clean (also through the
CLI, exit 0), and records forged straight onto the topics are found and named.

One federation runs once for the module (the slow part); its clean audit is taken before
any test tampers with the log. Each tamper test adds its own forged records and looks only
for the discrepancies it caused, so the tests do not depend on their order.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consumers.auditor import Auditor, Bound
from fi_stream.aggregation import aggregate
from fi_stream.audit import AuditReport, Logged
from fi_stream.block_signing import sign_response_block
from fi_stream.clock import now_ms
from fi_stream.kafka import ensure_topics, make_producer
from fi_stream.models import load_digits_split
from fi_stream.privacy import PrivacyBudget, choose_mechanism
from fi_stream.results import status_of
from fi_stream.settings import Settings, load_settings
from fi_stream.signing import PRIVATE_KEY_FILE, load_private_key
from producers.query_client import QueryClient
from schemas import (
    Event,
    Feedback,
    IncludedAnswer,
    Privacy,
    Query,
    Result,
    Tensor,
    WindowRef,
    encode,
    headers,
)
from schemas.blocks import (
    QueryBlockHeader,
    ResponseBlock,
    ResultBlockHeader,
    block_headers,
    encode_response_block,
    encode_result_block,
    split_query_id,
)
from schemas.blocks.convert import result_block_of
from tests.conftest import PIPELINE_PRIVACY

from .harness import federation, query_value

pytestmark = pytest.mark.kafka

SPLIT = load_digits_split()
#: Forged results go to a window of their own, far past any the aggregator opened.
FORGED_WINDOW = WindowRef(partition=0, seq=10_000)


@dataclass
class Recorded:
    settings: Settings
    clean: AuditReport
    cli_rc: int
    cli_out: str
    cli_json: dict[str, Any]
    html: str
    results: list[Logged[Result]]
    key: Ed25519PrivateKey  # p1's real signing key
    clean_until_ms: int  # every record before this time is the federation's own


async def _produce(settings: Settings, topic: str, event: Event | bytes, *, key: str,
                   partition: int) -> int:
    """One record with a plain (non-transactional) producer; returns its offset. A Query
    or a Result goes as the block of one that carries it."""
    producer = make_producer(settings)
    await producer.start()
    try:
        value, hdrs = _record(event)
        meta = await producer.send_and_wait(getattr(settings.topic_names, topic), value,
                                            key=key.encode(), partition=partition,
                                            headers=hdrs)
        return int(meta.offset)
    finally:
        await producer.stop()


def _record(event: Event | bytes) -> tuple[bytes, list[tuple[str, bytes]] | None]:
    if isinstance(event, bytes):
        return event, None
    if isinstance(event, Query):
        block_id, _ = split_query_id(event.query_id)
        return query_value(block_id, event.input.to_numpy(), created_at_ms=event.created_at_ms,
                           deadline_ms=event.deadline_ms), block_headers(QueryBlockHeader)
    if isinstance(event, Result):
        return (encode_result_block(result_block_of([event])),
                block_headers(ResultBlockHeader))
    return encode(event), headers(type(event))


async def _cli_audit(settings: Settings, out: Path) -> tuple[int, str]:
    env = dict(os.environ, FI_KAFKA__BOOTSTRAP=settings.kafka.bootstrap or "",
               FI_KAFKA__TOPIC_PREFIX=settings.kafka.topic_prefix,
               FI_KAFKA__PARTITIONS=str(settings.kafka.partitions))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fi_stream_cli", "--log-level", "WARNING", "audit",
        "--json", str(out / "audit.json"), "--report", str(out / "audit.html"),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    stdout, _ = await proc.communicate()
    return proc.returncode or 0, stdout.decode(errors="replace")


@pytest.fixture(scope="module")
async def recorded(kafka_bootstrap: str, model_dirs: dict[str, Path],
                   tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Recorded]:
    # As settings_factory(aggregator={"window_seconds": 0.5}) builds them, once per module.
    settings = load_settings(
        None, kafka={"bootstrap": kafka_bootstrap, "topic_prefix": f"t-{uuid.uuid4().hex[:10]}.",
                     "partitions": 2},
        aggregator={"window_seconds": 0.5}, privacy=PIPELINE_PRIVACY)
    await ensure_topics(settings)
    labels: dict[str, int] = {}
    async with federation(settings, model_dirs), QueryClient(settings, quorum=2) as client:
        for burst in range(3):  # three bursts, so that several incentive windows close
            rows = range(burst * 6, burst * 6 + 6)
            async for i, query, result in client.stream(
                    [SPLIT.x_test[r] for r in rows], deadline_ms=15_000):
                assert result.status == "complete"
                labels[query.query_id] = int(SPLIT.y_test[rows[i]])
            await asyncio.sleep(0.6)
        await asyncio.sleep(0.8)  # the last window closes after window_seconds
    producer = make_producer(settings)
    await producer.start()
    try:
        for qid, label in labels.items():
            await producer.send(settings.topic_names.feedback,
                                encode(Feedback(query_id=qid, label=label,
                                                created_at_ms=now_ms())),
                                key=split_query_id(qid)[0].encode(),
                                headers=headers(Feedback))
    finally:
        await producer.stop()
    await asyncio.sleep(0.01)
    clean_until_ms = now_ms()

    auditor = Auditor(settings)
    clean = await auditor.run()
    audit_log = await auditor.read()
    out = tmp_path_factory.mktemp("audit")
    rc, text = await _cli_audit(settings, out)
    cli_json = json.loads((out / "audit.json").read_text()) if (out / "audit.json").exists() \
        else {}
    html = (out / "audit.html").read_text() if (out / "audit.html").exists() else ""
    yield Recorded(settings, clean, rc, text, cli_json, html, audit_log.results,
                   load_private_key(model_dirs["p1"] / PRIVATE_KEY_FILE), clean_until_ms)


async def _audit(settings: Settings) -> AuditReport:
    return await Auditor(settings, merit=False).run()


def _of(report: AuditReport, kind: str, query_id: str | None = None,
        participant_id: str | None = None) -> list[Any]:
    return [d for d in report.discrepancies if d.kind == kind
            and (query_id is None or d.query_id == query_id)
            and (participant_id is None or d.participant_id == participant_id)]


# -- clean ---------------------------------------------------------------------------------------

async def test_an_untouched_log_audits_clean(recorded: Recorded) -> None:
    report = recorded.clean
    assert report.ok, [d.line() for d in report.discrepancies]
    c = report.counts
    assert c["queries"] == c["results"] == c["queries_answered"] == 18
    assert c["windows_closed"] >= 2 and c["windows_verified"] == c["windows_closed"]
    assert c["incentives"] >= 6 and c["signatures_verified"] == c["responses"]
    assert {s.participant_id for s in report.spend} == {"p1", "p2", "p3"}
    assert all(s.epsilon is not None and not s.exceeded for s in report.spend)
    assert report.throughput["events"] == c["records"] and report.throughput["events_per_s"] > 0


async def test_the_cli_exits_0_and_writes_json_and_html(recorded: Recorded) -> None:
    assert recorded.cli_rc == 0, recorded.cli_out
    doc = recorded.cli_json
    assert doc["ok"] is True and doc["discrepancies"] == []
    assert doc["counts"]["results"] == 18 and doc["throughput"]["events_per_s"] > 0
    assert {p["participant_id"] for p in doc["privacy"]} == {"p1", "p2", "p3"}
    assert any(w["spearman"] is not None or w["merit"] for w in doc["windows"])
    page = recorded.html
    assert page.count("<svg") >= 4 and "Everything holds" in page and "<script" not in page


async def test_replay_under_another_strategy_reports_accuracy(recorded: Recorded) -> None:
    untouched = Bound(time_ms=recorded.clean_until_ms)  # before any test forged records
    same = await Auditor(recorded.settings, end=untouched).replay("soft_vote")
    assert (same.replayed, same.changed) == (18, 0)
    other = await Auditor(recorded.settings, end=untouched).replay("median")
    assert other.labelled == 18 and other.recorded_accuracy is not None
    assert other.replayed_accuracy is not None


async def test_a_time_slice_audits_what_it_holds(recorded: Recorded) -> None:
    results = sorted(recorded.results, key=lambda r: r.event.completed_at_ms)
    middle = results[len(results) // 2].event.completed_at_ms
    report = await Auditor(recorded.settings, start=Bound(time_ms=middle),
                           end=Bound(time_ms=recorded.clean_until_ms)).run()
    assert report.partial and report.ok, [d.line() for d in report.discrepancies]
    assert 0 < report.counts["results"] < 18
    # Offsets work too (and win over the time for their partition); the registry and
    # feedback are read whole either way.
    # A partition with more than one result record (the client packs queries in blocks).
    records = Counter(p for p, _ in {(r.partition, r.offset) for r in recorded.results})
    partition = next(p for p, n in records.items() if n > 1)
    report = await Auditor(recorded.settings, end=Bound(
        time_ms=recorded.clean_until_ms, offsets={("results", partition): 1})).run()
    assert report.partial and report.ok, [d.line() for d in report.discrepancies]
    assert report.counts["participants"] == 3 and report.counts["feedback"] == 18


# -- tampering -----------------------------------------------------------------------------------

async def test_a_result_rewritten_with_another_prediction(recorded: Recorded) -> None:
    original = recorded.results[0]
    r = original.event
    assert r.prediction is not None
    forged = r.model_copy(update={"prediction": (r.prediction + 1) % 10})
    offset = await _produce(recorded.settings, "results", forged, key=split_query_id(r.query_id)[0],
                            partition=original.partition)
    report = await _audit(recorded.settings)
    [wrong] = _of(report, "prediction_mismatch", r.query_id)
    assert wrong.refs == (f"results:{original.partition}:{offset}",)
    [dup] = _of(report, "duplicate_result", r.query_id)
    assert f"results:{original.partition}:{original.offset}" in dup.refs


async def test_a_query_with_two_results(recorded: Recorded) -> None:
    original = recorded.results[1]
    r = original.event
    await _produce(recorded.settings, "results", r, key=split_query_id(r.query_id)[0],
                   partition=original.partition)
    report = await _audit(recorded.settings)
    [dup] = _of(report, "duplicate_result", r.query_id)
    assert len(dup.refs) == 2
    assert not _of(report, "prediction_mismatch", r.query_id)  # a faithful copy


async def test_a_query_with_no_result(recorded: Recorded) -> None:
    now = now_ms()
    query = Query(query_id=f"lost-{uuid.uuid4().hex[:8]}.0", task="digits",
                  input=Tensor.from_numpy(SPLIT.x_test[40]), created_at_ms=now - 61_000,
                  deadline_ms=now - 60_000)
    offset = await _produce(recorded.settings, "queries", query,
                            key=split_query_id(query.query_id)[0],
                            partition=1)
    report = await _audit(recorded.settings)
    [missing] = _of(report, "missing_result", query.query_id)
    assert missing.refs == (f"queries:1:{offset}",)


def _registered_privacy(settings: Settings) -> Privacy:
    """The privacy p1 registered under these settings (a forgery that states another is
    excluded as a privacy mismatch before its signature or lateness is looked at)."""
    p = settings.privacy
    return choose_mechanism(
        teachers=None, clip_norm=p.clip_norm, noise_multiplier=p.noise_multiplier,
        budget=PrivacyBudget(epsilon_max=p.epsilon_max, delta=p.delta),
        budget_answers=p.budget_answers).to_privacy()


async def _forge(recorded: Recorded, *, produced_late: bool, break_signature: bool
                 ) -> tuple[str, int]:
    """A query, p1's answer to it and a result that lists the answer, all written by hand.

    The aggregate is computed right, so only what the caller breaks is wrong."""
    s = recorded.settings
    now = now_ms()
    deadline = now - 10_000 if produced_late else now + 60_000
    query = Query(query_id=f"forged-{uuid.uuid4().hex[:8]}.0", task="digits",
                  input=Tensor.from_numpy(SPLIT.x_test[41]), created_at_ms=deadline - 5_000,
                  deadline_ms=deadline)
    await _produce(s, "queries", query, key=split_query_id(query.query_id)[0], partition=0)
    row = np.eye(1, 10, k=4, dtype=np.float32)
    block = ResponseBlock("p1", uuid.uuid4().hex, "digits", "forged", _registered_privacy(s),
                          now, 0, [(split_query_id(query.query_id)[0], 1)], row,
                          np.zeros(1, np.uint8))
    record = sign_response_block(encode_response_block(block), recorded.key)
    if break_signature:  # flip one bit of the signature (the record's last 64 bytes)
        record = record[:-64] + bytes([record[-64] ^ 1]) + record[-63:]
    offset = await _produce(s, "responses", record, key="p1", partition=0)
    agg = aggregate(row.astype(np.float64), "soft_vote")
    result = Result(
        query_id=query.query_id, task="digits", status=status_of(1, 1, 0),
        aggregate=Tensor.from_numpy(agg.vector), prediction=agg.prediction,
        confidence=agg.confidence,
        included=[IncludedAnswer(participant_id="p1", partition=0, offset=offset, index=0)],
        strategy="soft_vote", quorum=1, created_at_ms=query.created_at_ms,
        deadline_ms=deadline, completed_at_ms=now, window=FORGED_WINDOW)
    await _produce(s, "results", result, key=split_query_id(query.query_id)[0],
                   partition=0)
    return query.query_id, offset


async def test_a_forged_result_listing_a_response_with_a_broken_signature(
        recorded: Recorded) -> None:
    qid, offset = await _forge(recorded, produced_late=False, break_signature=True)
    report = await _audit(recorded.settings)
    [bad] = _of(report, "bad_signature", qid, "p1")
    assert bad.refs[1] == f"responses:0:{offset}#0"
    assert not [d for d in report.discrepancies
                if d.query_id == qid and d.kind != "bad_signature"]


async def test_a_listed_response_produced_after_the_deadline(recorded: Recorded) -> None:
    qid, offset = await _forge(recorded, produced_late=True, break_signature=False)
    report = await _audit(recorded.settings)
    [late] = _of(report, "response_after_deadline", qid, "p1")
    assert late.refs[1] == f"responses:0:{offset}#0"
    assert not _of(report, "bad_signature", qid)  # p1's real key signed it


async def test_an_inflated_reward(recorded: Recorded) -> None:
    auditor = Auditor(recorded.settings)
    incentives = (await auditor.read()).incentives
    paid = next(i for i in incentives if i.event.reward > 0)
    inc = paid.event
    forged = inc.model_copy(update={"reward": inc.reward * 2})
    offset = await _produce(recorded.settings, "incentives", forged, key=inc.participant_id,
                            partition=paid.partition)
    report = await _audit(recorded.settings)
    window = (inc.window.partition, inc.window.seq)
    here = f"incentives:{paid.partition}:{offset}"
    # (Another test's duplicate result may have put this window out of line as a whole:
    # look for what names the forged record.)
    [inflated] = [d for d in _of(report, "incentive_reward_mismatch", None, inc.participant_id)
                  if d.refs == (here,)]
    assert inflated.window == window
    [dup] = [d for d in _of(report, "duplicate_incentive", None, inc.participant_id)
             if here in d.refs]
    assert dup.window == window
