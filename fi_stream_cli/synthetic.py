"""A synthetic, signed log written by the aggregator's own code: `fi-stream bench audit`
and the audit's tests check the auditor against it."""

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

# -- a synthetic log (bench, tests) ------------------------------------------------------------

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


def synthetic_log(*, queries: int, participants: int = 5, partitions: int = 4,
                  batch: int = 32, window_results: int = 200, labelled: float = 0.5,
                  decline_rate: float = 0.02, seed: int = 0, start_ms: int = 1_700_000_000_000,
                  ) -> SyntheticLog:
    """A faithful log of `queries` queries: participants of differing skill answer in signed
    micro-batches; the aggregator's own pure code (JoinTable, build_result, IncentiveWindow)
    makes the results and incentives; a share of queries gets a feedback label."""
    rng = np.random.default_rng(seed)
    out = SyntheticLog()
    privacy = Privacy(clip_norm=1.0, noise_multiplier=0.3)
    ids = [f"p{k + 1}" for k in range(participants)]
    keys = out.keys = {pid: Ed25519PrivateKey.generate() for pid in ids}
    skill = np.linspace(0.9, 0.4, participants)
    for pid in ids:
        out.add("registry", 0, pid, Participant(
            participant_id=pid, public_key=public_key_bytes(keys[pid]), tasks=["digits"],
            model_version="synthetic", privacy=privacy,
            budget=Budget(epsilon_max=1e6, delta=1e-5), registered_at_ms=start_ms))
    expected = frozenset(ids)
    table = JoinTable()
    windows = {p: IncentiveWindow(p, 0, start_ms, "loo_agreement") for p in range(partitions)}
    x = Tensor.from_numpy(np.zeros(64, np.float32))
    now = start_ms
    for first in range(0, queries, batch * partitions):
        for p in range(partitions):
            chunk = [i for i in range(first + p, min(queries, first + batch * partitions),
                                      partitions)]
            if not chunk:
                continue
            labels = rng.integers(0, 10, len(chunk))
            qids = [f"q{i:08d}" for i in chunk]
            for qid in qids:
                q = Query(query_id=qid, task="digits", input=x, created_at_ms=now,
                          deadline_ms=now + 2000, quorum=2)
                table.add_query(q, p, out.add("queries", p, qid, q), expected)
            now += 3
            for k, pid in enumerate(ids):
                declines = rng.random(len(chunk)) < decline_rate
                answered = [q for q, d in zip(qids, declines, strict=True) if not d]
                right = rng.random(len(chunk)) < skill[k]
                cls = np.where(right, labels, rng.integers(0, 10, len(chunk)))[~declines]
                rows = rng.dirichlet(np.full(10, 0.3), len(answered)).astype(np.float32) * 0.3
                rows[np.arange(len(answered)), cls] += 0.7
                rows += rng.normal(0, 0.05, rows.shape).astype(np.float32)
                b = sign_batch(ResponseBatch(
                    participant_id=pid, batch_id=uuid.uuid4().hex, task="digits",
                    model_version="synthetic", privacy=privacy, produced_at_ms=now,
                    query_partition=p, answered=answered, outputs=Tensor.from_numpy(rows),
                    declined=[Decline(query_id=q, reason="budget_exhausted")
                              for q, d in zip(qids, declines, strict=True) if d]), keys[pid])
                table.add_batch(b, p, out.add("responses", p, pid, b), now)
            now += 2
            for oq in table.take_settled():
                window = windows[oq.partition]
                result, rids, outputs = build_result(oq, strategy="soft_vote",
                                                     completed_at_ms=now, window=window.ref)
                window.add(result, rids, outputs)
                table.close(oq, now)
                out.add("results", oq.partition, result.query_id, result)
                if window.results >= window_results:
                    for inc in window.close(budget=100.0):
                        out.add("incentives", oq.partition, inc.participant_id, inc)
                    windows[oq.partition] = IncentiveWindow(oq.partition, window.seq + 1, now,
                                                            "loo_agreement")
            for qid, label in zip(qids, labels, strict=True):
                if rng.random() < labelled:
                    out.add("feedback", p, qid, Feedback(query_id=qid, label=int(label),
                                                         created_at_ms=now))
    for p, window in windows.items():
        if window.results:
            for inc in window.close(budget=100.0):
                out.add("incentives", p, inc.participant_id, inc)
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
