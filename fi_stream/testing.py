"""Test support shared by the tests and the benchmarks: a synthetic, signed log written by
the aggregator's own pure code (`fi-stream bench audit` and the audit's tests check the
auditor against it), and `produce_log` to write one to fresh topics.

The log is the wire as the services write it (issue 13): a query block per chunk of queries,
one signed response block per participant and chunk, a result block per query block and
incentive window, and JSON events for the registry, feedback (keyed by the query's block id)
and incentives. `SyntheticLog.audit_log()` decodes it with the auditor's own reader
(fi_stream.audit.ingest.add_record), so a test audits exactly what the reader would read."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fi_stream.audit import AuditLog, TopicKind
from fi_stream.audit.ingest import add_record
from fi_stream.block_signing import sign_response_block
from fi_stream.join import JoinTable
from fi_stream.results import IncentiveWindow, build_result
from fi_stream.settings import Settings
from fi_stream.signing import public_key_bytes
from schemas import Budget, Event, Feedback, Participant, Privacy, Result, encode, headers
from schemas.blocks import (
    DECLINE_CODES,
    QueryBlockHeader,
    ResponseBlock,
    ResponseBlockHeader,
    ResultBlockHeader,
    block_headers,
    decode_response_block,
    encode_query_block,
    encode_response_block,
    encode_result_block,
    query_block,
    split_query_id,
)
from schemas.blocks.convert import queries_of, response_batch_of, result_block_of

__all__ = ["SyntheticLog", "SyntheticRecord", "produce_log", "synthetic_log"]

_PRIVACY = Privacy(clip_norm=1.0, noise_multiplier=0.3)
_BUDGET = 100.0  # reward points per incentive window
_METHOD = "loo_agreement"
_BUDGET_EXHAUSTED = DECLINE_CODES.index("budget_exhausted")
_BLOCK_HEADERS: dict[TopicKind, list[tuple[str, bytes]]] = {
    "queries": block_headers(QueryBlockHeader), "responses": block_headers(ResponseBlockHeader),
    "results": block_headers(ResultBlockHeader)}


class SyntheticRecord(NamedTuple):
    """One record as written: topic, partition, key, value and Kafka headers."""

    topic: TopicKind
    partition: int
    key: str
    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass
class SyntheticLog:
    """Records in production order, each with its topic and partition; offsets are predicted
    (fresh topics, one idempotent producer: every partition counts 0, 1, 2, …)."""

    records: list[SyntheticRecord] = field(default_factory=list)
    keys: dict[str, Ed25519PrivateKey] = field(default_factory=dict)
    _next: dict[tuple[TopicKind, int], int] = field(default_factory=dict)

    def add(self, topic: TopicKind, partition: int, key: str, value: bytes | Event) -> int:
        """Append a record (a block's bytes, or a JSON event); its predicted offset."""
        raw, hdrs = ((value, _BLOCK_HEADERS[topic]) if isinstance(value, bytes)
                     else (encode(value), headers(type(value))))
        offset = self._next.get((topic, partition), 0)
        self._next[(topic, partition)] = offset + 1
        self.records.append(SyntheticRecord(topic, partition, key, raw, hdrs))
        return offset

    def audit_log(self) -> AuditLog:
        """The records as the auditor would read them (no clock: every query is due)."""
        out = AuditLog()
        seen: dict[tuple[TopicKind, int], int] = {}
        for r in self.records:
            offset = seen.get((r.topic, r.partition), 0)
            seen[(r.topic, r.partition)] = offset + 1
            add_record(out, r.topic, r.partition, offset, r.value, key=r.key.encode(),
                       headers=r.headers)
        return out


@dataclass
class _Writer:
    """The state of one synthetic run: the log, the join, one window per partition."""

    out: SyntheticLog
    rng: np.random.Generator
    ids: list[str]
    skill: np.ndarray[Any, Any]
    windows: dict[int, IncentiveWindow]
    window_results: int
    decline_rate: float
    labelled: float
    now: int
    table: JoinTable = field(default_factory=JoinTable)

    def chunk(self, p: int, chunk: list[int]) -> None:
        """Queries `chunk` on partition `p`, one query block: asked, answered by everyone,
        settled, labelled."""
        labels = self.rng.integers(0, 10, len(chunk))
        block_id = f"b{chunk[0]:08d}"
        block = query_block(block_id, "digits", np.zeros((len(chunk), 64), np.float32),
                            created_at_ms=self.now, deadline_ms=self.now + 2000, quorum=2)
        offset = self.out.add("queries", p, block_id, encode_query_block(block))
        expected = frozenset(self.ids)
        qids = []
        for q in queries_of(block):
            self.table.add_query(q, p, offset, expected)
            qids.append(q.query_id)
        self.now += 3
        for k, pid in enumerate(self.ids):
            record = self.response(pid, float(self.skill[k]), p, block_id, labels)
            batch = response_batch_of(decode_response_block(record))
            self.table.add_batch(batch, p, self.out.add("responses", p, pid, record), self.now)
        self.now += 2
        self.settle()
        for qid, label in zip(qids, labels, strict=True):
            if self.rng.random() < self.labelled:
                self.out.add("feedback", p, block_id, Feedback(
                    query_id=qid, label=int(label), created_at_ms=self.now))

    def response(self, pid: str, skill: float, p: int, block_id: str,
                 labels: np.ndarray[Any, Any]) -> bytes:
        """One participant's signed response block: right with probability `skill`, some
        rows declined."""
        rng, n = self.rng, len(labels)
        declines = rng.random(n) < self.decline_rate
        answered = int((~declines).sum())
        right = rng.random(n) < skill
        cls = np.where(right, labels, rng.integers(0, 10, n))[~declines]
        rows = rng.dirichlet(np.full(10, 0.3), answered).astype(np.float32) * 0.3
        rows[np.arange(answered), cls] += 0.7
        rows += rng.normal(0, 0.05, rows.shape).astype(np.float32)
        outputs = np.zeros((n, 10), np.float32)
        outputs[~declines] = rows
        status = np.where(declines, _BUDGET_EXHAUSTED, 0).astype(np.uint8)
        block = ResponseBlock(pid, f"{pid}-{block_id}", "digits", "synthetic", _PRIVACY,
                              self.now, p, [(block_id, n)], outputs, status)
        return sign_response_block(encode_response_block(block), self.out.keys[pid])

    def settle(self) -> None:
        """Results of the settled queries, a result block per query block and window; a
        full window closes into incentives (after the results it counts)."""
        group: list[Result] = []
        p = 0
        for oq in self.table.take_settled():
            window = self.windows[oq.partition]
            result, rids, outputs = build_result(oq, strategy="soft_vote",
                                                 completed_at_ms=self.now, window=window.ref)
            window.add(result, rids, outputs)
            self.table.close(oq, self.now)
            if group and _block_of(group[0]) != _block_of(result):
                self.write(p, group)
            group.append(result)
            p = oq.partition
            if window.results >= self.window_results:
                self.write(p, group)
                self.close(p)
                self.windows[p] = IncentiveWindow(p, window.seq + 1, self.now, _METHOD)
        if group:
            self.write(p, group)

    def write(self, p: int, group: list[Result]) -> None:
        """The result block of `group` (results of one query block and window); emptied."""
        block = result_block_of(group)
        self.out.add("results", p, block.block_id, encode_result_block(block))
        group.clear()

    def close(self, p: int) -> None:
        for inc in self.windows[p].close(budget=_BUDGET):
            self.out.add("incentives", p, inc.participant_id, inc)


def _block_of(result: Result) -> str:
    return split_query_id(result.query_id)[0]


def synthetic_log(*, queries: int, participants: int = 5, partitions: int = 4,
                  batch: int = 32, window_results: int = 200, labelled: float = 0.5,
                  decline_rate: float = 0.02, seed: int = 0, start_ms: int = 1_700_000_000_000,
                  ) -> SyntheticLog:
    """A faithful log of `queries` queries: participants of differing skill answer in signed
    micro-batches; the aggregator's own pure code (JoinTable, build_result, IncentiveWindow)
    makes the results and incentives; a share of queries gets a feedback label."""
    out = SyntheticLog()
    ids = [f"p{k + 1}" for k in range(participants)]
    out.keys = {pid: Ed25519PrivateKey.generate() for pid in ids}
    for pid in ids:
        out.add("registry", 0, pid, Participant(
            participant_id=pid, public_key=public_key_bytes(out.keys[pid]), tasks=["digits"],
            model_version="synthetic", privacy=_PRIVACY,
            budget=Budget(epsilon_max=1e6, delta=1e-5), registered_at_ms=start_ms))
    w = _Writer(out, np.random.default_rng(seed), ids, np.linspace(0.9, 0.4, participants),
                {p: IncentiveWindow(p, 0, start_ms, _METHOD) for p in range(partitions)},
                window_results, decline_rate, labelled, start_ms)
    for first in range(0, queries, batch * partitions):
        for p in range(partitions):
            chunk = list(range(first + p, min(queries, first + batch * partitions), partitions))
            if chunk:
                w.chunk(p, chunk)
    for p, window in w.windows.items():
        if window.results:
            w.close(p)
    return out


async def produce_log(settings: Settings, synthetic: SyntheticLog) -> None:
    """Write the events to the (fresh) topics of `settings`, in order."""
    from fi_stream.kafka import make_producer

    names = settings.topic_names.model_dump()
    producer = make_producer(settings, linger_ms=20)
    await producer.start()
    # Fresh topics: the first sends may meet a leader still being elected; they are retried.
    client_log = logging.getLogger("aiokafka")
    level = client_log.level
    client_log.setLevel(logging.ERROR)
    try:
        futures = []
        for r in synthetic.records:
            futures.append(await producer.send(names[r.topic], r.value, key=r.key.encode(),
                                               partition=r.partition, headers=r.headers))
        await asyncio.gather(*futures)
    finally:
        client_log.setLevel(level)
        await producer.stop()
