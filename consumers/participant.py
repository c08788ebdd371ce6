"""A participant: its own consumer group on fi.queries, GPU/CPU-batched inference, clipped
and noised outputs, one signed ResponseBatch per micro-batch and partition.

At-least-once: offsets are committed only after the batch's responses are acked.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from fi_stream.batching import MicroBatcher
from fi_stream.clock import now_ms
from fi_stream.engine import InferenceEngine, pick_device
from fi_stream.kafka import DeadLetterQueue, make_consumer, make_producer
from fi_stream.ledger import LEDGER_FILE, PrivacyLedger
from fi_stream.models import load_model
from fi_stream.privacy import GaussianMechanism, PrivacyBudget
from fi_stream.settings import Settings
from fi_stream.signing import PRIVATE_KEY_FILE, load_or_create_key, public_key_bytes, sign_batch
from schemas import (
    Budget,
    Decline,
    DeclineReason,
    DecodeError,
    Participant,
    Privacy,
    Query,
    ResponseBatch,
    Tensor,
    decode,
    encode,
    headers,
)

log = structlog.get_logger(__name__)

Record = ConsumerRecord[bytes, bytes]


@dataclass
class _PartitionAnswers:
    """What one micro-batch says about the queries of one partition."""

    answered: list[str] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    declined: list[Decline] = field(default_factory=list)


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.queries = Counter("fi_participant_queries", "Queries seen", ["outcome"],
                               registry=registry)
        self.batch_size = Histogram("fi_participant_batch_size", "Queries per micro-batch",
                                    buckets=(1, 4, 16, 64, 256, 1024, 4096), registry=registry)
        self.device_seconds = Histogram("fi_participant_device_seconds",
                                        "Forward+privatize time per batch", registry=registry)
        self.epsilon = Gauge("fi_participant_epsilon_spent", "Privacy spent (ε at δ)",
                             registry=registry)


class ParticipantService:
    """`async with ParticipantService(...)` runs until `stop()` (or SIGTERM via the CLI)."""

    def __init__(self, settings: Settings, *, participant_id: str, model_dir: Path,
                 registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.participant_id = participant_id
        self.model_dir = model_dir
        self.topics = settings.topic_names
        self.group_id = f"fi.participant.{participant_id}"
        self.metrics_registry = registry if registry is not None else CollectorRegistry()
        self._metrics = _Metrics(self.metrics_registry)
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._closed = False
        self.batches = 0
        self.answered = 0

    async def __aenter__(self) -> ParticipantService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        structlog.contextvars.bind_contextvars(participant_id=self.participant_id)
        loop = asyncio.get_running_loop()
        module, spec = await loop.run_in_executor(None, load_model, self.model_dir)
        p = self.settings.privacy
        mechanism = GaussianMechanism(clip_norm=p.clip_norm, noise_multiplier=p.noise_multiplier)
        self.spec = spec
        self.engine = InferenceEngine(module, spec, mechanism,
                                      pick_device(self.settings.participant.device))
        self.ledger = PrivacyLedger.open(
            self.model_dir / LEDGER_FILE,
            PrivacyBudget(epsilon_max=p.epsilon_max, delta=p.delta), p.noise_multiplier,
        )
        self._key = load_or_create_key(self.model_dir / PRIVATE_KEY_FILE)
        self._privacy = Privacy(clip_norm=p.clip_norm, noise_multiplier=p.noise_multiplier)
        self._producer = make_producer(self.settings)
        await self._producer.start()
        self._dlq = DeadLetterQueue(self._producer, self.topics.dlq, self.group_id,
                                    registry=self.metrics_registry)
        await self._register()
        self._consumer = make_consumer(self.settings, self.topics.queries,
                                       group_id=self.group_id, max_poll_records=None)
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name=f"participant-{self.participant_id}")
        self._task.add_done_callback(self._on_task_done)
        log.info("participant_started", device=str(self.engine.device), task=spec.task,
                 model_version=spec.version, clip_norm=p.clip_norm,
                 noise_multiplier=p.noise_multiplier, epsilon_spent=self.ledger.epsilon)

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("participant_failed", exc_info=task.exception())
            self._stopping.set()

    async def _register(self) -> None:
        assert self._producer is not None
        entry = Participant(
            participant_id=self.participant_id, public_key=public_key_bytes(self._key),
            tasks=[self.spec.task], model_version=self.spec.version, privacy=self._privacy,
            budget=Budget(epsilon_max=self.ledger.budget.epsilon_max,
                          delta=self.ledger.budget.delta),
            registered_at_ms=now_ms(),
        )
        await self._producer.send_and_wait(
            self.topics.registry, encode(entry), key=self.participant_id.encode(),
            headers=headers(Participant),
        )

    def request_stop(self) -> None:
        """Signal-safe: ask the loop to stop polling; `stop()` waits for the rest."""
        self._stopping.set()

    async def wait(self) -> None:
        """Block until the service stops by itself or is asked to."""
        await self._stopping.wait()

    async def stop(self) -> None:
        """Stop polling, finish the batch in hand, flush, commit, close. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()
        log.info("participant_stopped", batches=self.batches, answered=self.answered)

    # -- the loop ---------------------------------------------------------------------------

    async def _fetch(self, timeout_ms: int, max_records: int) -> list[Record]:
        assert self._consumer is not None
        got = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        return [r for recs in got.values() for r in recs]

    async def _run(self) -> None:
        cfg = self.settings.participant
        batcher = MicroBatcher[Record](fetch=self._fetch, max_batch=cfg.max_batch,
                                       max_wait_ms=cfg.max_wait_ms)
        while not self._stopping.is_set():
            records = await batcher.next_batch()
            if records:
                await self._process(records)

    async def _process(self, records: list[Record]) -> None:
        """Decode → forward (worker thread) → sign → produce → await acks → commit."""
        assert self._consumer is not None and self._producer is not None
        now = now_ms()
        by_partition: dict[int, _PartitionAnswers] = defaultdict(_PartitionAnswers)
        inputs: list[np.ndarray[Any, Any]] = []
        pending: list[tuple[int, str]] = []  # (partition, query_id) in input order
        for record in records:
            try:
                query = decode(record.value, Query)
            except DecodeError as exc:
                await self._dlq.send(record, exc.reason, exc.detail)
                self._metrics.queries.labels("dlq").inc()
                continue
            reason = self._check(query, now)
            if reason is not None:
                by_partition[record.partition].declined.append(
                    Decline(query_id=query.query_id, reason=reason))
                self._metrics.queries.labels(reason).inc()
                continue
            inputs.append(query.input.to_numpy())
            pending.append((record.partition, query.query_id))

        granted = await asyncio.to_thread(self.ledger.reserve, len(pending)) if pending else 0
        for partition, query_id in pending[granted:]:
            by_partition[partition].declined.append(
                Decline(query_id=query_id, reason="budget_exhausted"))
        self._metrics.queries.labels("budget_exhausted").inc(len(pending) - granted)
        outputs = np.zeros((0, self.spec.num_classes), np.float32)
        if granted:
            batch = np.stack(inputs[:granted]).astype(np.float32, copy=False)
            started = time.perf_counter()
            outputs = await asyncio.to_thread(self.engine.infer, batch)
            self._metrics.device_seconds.observe(time.perf_counter() - started)
            for row, (partition, query_id) in enumerate(pending[:granted]):
                part = by_partition[partition]
                part.answered.append(query_id)
                part.rows.append(row)
            self._metrics.queries.labels("answered").inc(granted)
            self._metrics.epsilon.set(self.ledger.epsilon)

        futures = [await self._send(partition, part, outputs)
                   for partition, part in sorted(by_partition.items())]
        await asyncio.gather(*futures)
        await self._producer.flush()  # dead letters too, before their offsets are committed
        offsets: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
        await self._consumer.commit(offsets)
        self.batches += 1
        self.answered += granted
        self._metrics.batch_size.observe(len(records))

    def _check(self, query: Query, now: int) -> DeclineReason | None:
        if query.task != self.spec.task:
            return "unsupported_task"
        if query.deadline_ms <= now:
            return "expired"  # answering would spend privacy on a result nobody waits for
        if (query.input.shape != tuple(self.spec.input_shape) or query.input.dtype != "<f4"
                or not np.isfinite(query.input.to_numpy()).all()):
            return "bad_input"
        return None

    async def _send(self, partition: int, part: _PartitionAnswers,
                    outputs: np.ndarray[Any, Any]) -> asyncio.Future[Any]:
        assert self._producer is not None
        rows = outputs[part.rows] if part.rows else np.zeros((0, self.spec.num_classes),
                                                              np.float32)
        batch = ResponseBatch(
            participant_id=self.participant_id, batch_id=uuid.uuid4().hex, task=self.spec.task,
            model_version=self.spec.version, privacy=self._privacy, produced_at_ms=now_ms(),
            query_partition=partition, answered=part.answered,
            outputs=Tensor.from_numpy(np.ascontiguousarray(rows, dtype=np.float32)),
            declined=part.declined,
        )
        signed = sign_batch(batch, self._key)
        return await self._producer.send(
            self.topics.responses, encode(signed), key=self.participant_id.encode(),
            partition=partition, headers=headers(ResponseBatch),
        )
