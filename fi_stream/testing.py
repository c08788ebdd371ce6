"""Test support shared by the tests and the benchmarks: a synthetic, signed log written by
the aggregator's own pure code (`fi-stream bench audit` and the audit's tests check the
auditor against it), and `produce_log` to write one to fresh topics."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fi_stream.audit import AuditLog, Logged, TopicKind
from fi_stream.join import JoinTable
from fi_stream.results import IncentiveWindow, build_result
from fi_stream.settings import Settings
from fi_stream.signing import public_key_bytes, sign_batch
from schemas import (
    Budget,
    Decline,
    Event,
    Feedback,
    Participant,
    Privacy,
    Query,
    ResponseBatch,
    Tensor,
    encode,
    headers,
)

__all__ = ["SyntheticLog", "produce_log", "synthetic_log"]

_PRIVACY = Privacy(clip_norm=1.0, noise_multiplier=0.3)
_BUDGET = 100.0  # reward points per incentive window
_METHOD = "loo_agreement"


@dataclass
class SyntheticLog:
    """Events in production order, each with its topic and partition; offsets are predicted
    (fresh topics, one idempotent producer: every partition counts 0, 1, 2, …)."""

    records: list[tuple[TopicKind, int, str, Event]] = field(default_factory=list)
    keys: dict[str, Ed25519PrivateKey] = field(default_factory=dict)
    _next: dict[tuple[TopicKind, int], int] = field(default_factory=dict)

    def add(self, topic: TopicKind, partition: int, key: str, event: Event) -> int:
        offset = self._next.get((topic, partition), 0)
        self._next[(topic, partition)] = offset + 1
        self.records.append((topic, partition, key, event))
        return offset

    def audit_log(self) -> AuditLog:
        """The same events as the auditor would read them (no clock: every query is due)."""
        out = AuditLog()
        seen: dict[tuple[TopicKind, int], int] = {}
        for topic, partition, _, event in self.records:
            offset = seen.get((topic, partition), 0)
            seen[(topic, partition)] = offset + 1
            target: list[Any] = getattr(out, topic)
            target.append(Logged(event, partition, offset))
            out.records[topic] = out.records.get(topic, 0) + 1
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
    x: Tensor = field(default_factory=lambda: Tensor.from_numpy(np.zeros(64, np.float32)))

    def chunk(self, p: int, chunk: list[int]) -> None:
        """Queries `chunk` on partition `p`: asked, answered by everyone, settled, labelled."""
        labels = self.rng.integers(0, 10, len(chunk))
        qids = [f"q{i:08d}" for i in chunk]
        expected = frozenset(self.ids)
        for qid in qids:
            q = Query(query_id=qid, task="digits", input=self.x, created_at_ms=self.now,
                      deadline_ms=self.now + 2000, quorum=2)
            self.table.add_query(q, p, self.out.add("queries", p, qid, q), expected)
        self.now += 3
        for k, pid in enumerate(self.ids):
            b = self.batch(pid, float(self.skill[k]), p, qids, labels)
            self.table.add_batch(b, p, self.out.add("responses", p, pid, b), self.now)
        self.now += 2
        self.settle()
        for qid, label in zip(qids, labels, strict=True):
            if self.rng.random() < self.labelled:
                self.out.add("feedback", p, qid, Feedback(query_id=qid, label=int(label),
                                                          created_at_ms=self.now))

    def batch(self, pid: str, skill: float, p: int, qids: list[str],
              labels: np.ndarray[Any, Any]) -> ResponseBatch:
        """One participant's signed answers: right with probability `skill`, some declined."""
        rng, n = self.rng, len(qids)
        declines = rng.random(n) < self.decline_rate
        answered = [q for q, d in zip(qids, declines, strict=True) if not d]
        right = rng.random(n) < skill
        cls = np.where(right, labels, rng.integers(0, 10, n))[~declines]
        rows = rng.dirichlet(np.full(10, 0.3), len(answered)).astype(np.float32) * 0.3
        rows[np.arange(len(answered)), cls] += 0.7
        rows += rng.normal(0, 0.05, rows.shape).astype(np.float32)
        return sign_batch(ResponseBatch(
            participant_id=pid, batch_id=uuid.uuid4().hex, task="digits",
            model_version="synthetic", privacy=_PRIVACY, produced_at_ms=self.now,
            query_partition=p, answered=answered, outputs=Tensor.from_numpy(rows),
            declined=[Decline(query_id=q, reason="budget_exhausted")
                      for q, d in zip(qids, declines, strict=True) if d]), self.out.keys[pid])

    def settle(self) -> None:
        """Results of the settled queries; a full window closes into incentives."""
        for oq in self.table.take_settled():
            window = self.windows[oq.partition]
            result, rids, outputs = build_result(oq, strategy="soft_vote",
                                                 completed_at_ms=self.now, window=window.ref)
            window.add(result, rids, outputs)
            self.table.close(oq, self.now)
            self.out.add("results", oq.partition, result.query_id, result)
            if window.results >= self.window_results:
                self.close(oq.partition)
                self.windows[oq.partition] = IncentiveWindow(oq.partition, window.seq + 1,
                                                             self.now, _METHOD)

    def close(self, p: int) -> None:
        for inc in self.windows[p].close(budget=_BUDGET):
            self.out.add("incentives", p, inc.participant_id, inc)


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
        for topic, partition, key, event in synthetic.records:
            futures.append(await producer.send(names[topic], encode(event), key=key.encode(),
                                               partition=partition,
                                               headers=headers(type(event))))
        await asyncio.gather(*futures)
    finally:
        client_log.setLevel(level)
        await producer.stop()
