"""A participant: its own consumer group on fi.queries (query blocks), GPU/CPU-batched
inference over every row of a micro-batch's blocks at once, clipped and noised outputs, one
signed response block per micro-batch and query partition (fi_stream.engine).

At-least-once: offsets are committed only after the batch's responses are acked.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry

from consumers.enrolment import enrol
from consumers.participant_metrics import ParticipantMetrics
from fi_stream.batching import fetch_batching, query_record_bytes
from fi_stream.behaviours import Behaviour, strategic_model
from fi_stream.clock import now_ms
from fi_stream.engine import InferenceEngine, Prepared, Signer, assemble, pick_device, prepare
from fi_stream.kafka import DeadLetterQueue, make_consumer, make_producer
from fi_stream.kafka.dlq import key_text
from fi_stream.kafka.reading import poll
from fi_stream.ledger import LEDGER_FILE, PrivacyLedger
from fi_stream.ledger_sync import SharedBudget, floor_ledger
from fi_stream.models import load_model
from fi_stream.privacy import PrivacyBudget, choose_mechanism, max_answers, per_answer_epsilon
from fi_stream.quota import QUOTA_FILE, Quota, QuotaBook, block_charger, signature_of
from fi_stream.registry import RegistryView
from fi_stream.reuse import AnswerCache, Answers, Reserve, answer_batch
from fi_stream.service import Service
from fi_stream.settings import Settings
from fi_stream.signing import PRIVATE_KEY_FILE, load_or_create_key, public_key_bytes
from schemas import Budget, Participant
from schemas.blocks import ResponseBlockHeader, block_headers

log = structlog.get_logger(__name__)

Record: TypeAlias = ConsumerRecord[bytes, bytes]


#: Acked offsets are committed at most this often (and at stop): a commit is a round trip
#: and a write on the broker, too costly to pay per micro-batch — per batch, the commits of
#: five participants took a tenth of the broker's CPU. A crash re-answers what was acked but
#: not yet committed (at-least-once; the aggregator dedupes, the ledger counts the spend).
COMMIT_INTERVAL_S = 1.0
#: How long an empty fetch waits before the loop looks at its stop flag again.
IDLE_POLL_MS = 100
#: CPU work per micro-batch up to which it runs on the event loop (see `_publish`).
INLINE_WORK_S = 0.005
#: A participant whose single answer costs more than this ε warns at start: its settings
#: protect next to nothing (ε = 10 lets an observer be e^10 ≈ 22,000 times surer).
WARN_EPSILON_PER_ANSWER = 10.0


@dataclass
class _Batch:
    """A micro-batch on its way through the stages, with the acks that must precede its commit."""

    records: list[Record]
    prepared: Prepared
    acks: list[asyncio.Future[Any]]


class ParticipantService(Service):
    """`async with ParticipantService(...)` runs until `stop()` (or SIGTERM via the CLI)."""

    name = "participant"

    def __init__(self, settings: Settings, *, participant_id: str, model_dir: Path,
                 registry: CollectorRegistry | None = None, behaviour: Behaviour = "honest",
                 collusion_secret: bytes = b"") -> None:
        super().__init__()
        self.settings = settings
        self.participant_id = participant_id
        self.model_dir = model_dir
        #: Experiments and tests only: a strategic participant (fi_stream.behaviours).
        self.behaviour = behaviour
        self._collusion_secret = collusion_secret
        self.topics = settings.topic_names
        self.group_id = f"{settings.kafka.topic_prefix}fi.participant.{participant_id}"
        self.metrics_registry = registry if registry is not None else CollectorRegistry()
        self._metrics = ParticipantMetrics(self.metrics_registry)
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self.batches = 0
        self.answered = 0
        self.reused = 0
        self.commits_refused = 0  # commits the group refused (membership lost, then rejoined)
        self._work_s = 0.0  # CPU time of the last micro-batch's device work and signing
        self.admitted: Participant | None = None  # the operator's entry, when there is one
        self._registry: RegistryView | None = None  # with an operator: trusted clients
        self._budget: SharedBudget | None = None  # the budget in Kafka (ledger_sync)

    async def _open(self) -> None:
        structlog.contextvars.bind_contextvars(participant_id=self.participant_id)
        loop = asyncio.get_running_loop()
        module, spec = await loop.run_in_executor(None, load_model, self.model_dir)
        if self.behaviour not in ("honest", "copycat"):  # a copycat never calls its model
            module = await asyncio.to_thread(strategic_model, module, spec, self.behaviour,
                                             collusion_secret=self._collusion_secret)
            log.warning("strategic_participant", behaviour=self.behaviour)
        p = self.settings.privacy
        budget = PrivacyBudget(epsilon_max=p.epsilon_max, delta=p.delta)
        mechanism = choose_mechanism(teachers=spec.teachers, clip_norm=p.clip_norm,
                                     noise_multiplier=p.noise_multiplier, budget=budget,
                                     budget_answers=p.budget_answers)
        self.spec = spec
        cfg = self.settings.participant
        self.engine = InferenceEngine(module, spec, mechanism, pick_device(cfg.device),
                                      cfg.precision, cfg.compile)
        self.cache = AnswerCache(mechanism, cfg.reuse_cache)
        self.ledger = PrivacyLedger.open(self.model_dir / LEDGER_FILE, budget, mechanism,
                                         p.reserve_ahead)
        self.ledger.lock()
        # The budget in answers of this run's mechanism (after other mechanisms' spend).
        cap = max_answers(budget, mechanism, self.ledger.spend)
        self.quota = QuotaBook.open(self.model_dir / QUOTA_FILE, cap,
                                    self.settings.security.client_quota_share)
        if self.settings.participant.ledger_topic:
            self._budget = SharedBudget(self.settings, self.participant_id, cap=cap,
                                        block=min(p.reserve_ahead, cap // 100))
            floor_ledger(self.ledger, await self._budget.start())
        # Computed when scraped: an RDP conversion per batch cost ~10 % of the event loop.
        self._metrics.epsilon.set_function(lambda: self.ledger.epsilon)
        self._key = load_or_create_key(self.model_dir / PRIVATE_KEY_FILE)
        self._privacy = mechanism.to_privacy()
        per_answer = per_answer_epsilon(mechanism, p.delta)
        if per_answer > WARN_EPSILON_PER_ANSWER:
            log.warning("privacy_weak", epsilon_per_answer=per_answer, delta=p.delta,
                        mechanism=mechanism.describe(),
                        hint="raise privacy.noise_multiplier or train --teachers K")
        self._signer = Signer(participant_id=self.participant_id, spec=spec,
                              privacy=self._privacy, key=self._key)
        self._producer = make_producer(self.settings)
        await self._producer.start()
        self._dlq = DeadLetterQueue(self._producer, self.topics.dlq, self.group_id,
                                    registry=self.metrics_registry)
        await self._register()
        self._consumer = make_consumer(self.settings, self.topics.queries,
                                       group_id=self.group_id, max_poll_records=None,
                                       **fetch_batching(cfg.max_batch, cfg.max_wait_ms,
                                                        query_record_bytes(spec.input_shape)))
        await self._consumer.start()
        log.info("participant_started", device=str(self.engine.device), task=spec.task,
                 model_version=spec.version, mechanism=mechanism.name,
                 teachers=mechanism.teachers, clip_norm=mechanism.clip_norm,
                 noise_multiplier=mechanism.noise_multiplier,
                 epsilon_per_answer=per_answer, epsilon_spent=self.ledger.epsilon,
                 epsilon_max=p.epsilon_max, delta=p.delta)

    async def _register(self) -> None:
        """On an open registry, self-register (development). With an operator, publish
        nothing: wait until the operator has admitted this id with this key."""
        assert self._producer is not None
        entry = Participant(
            participant_id=self.participant_id, public_key=public_key_bytes(self._key),
            tasks=[self.spec.task], model_version=self.spec.version, privacy=self._privacy,
            task_specs=[self.spec.task_spec()],
            budget=Budget(epsilon_max=self.ledger.budget.epsilon_max,
                          delta=self.ledger.budget.delta),
            registered_at_ms=now_ms(),
        )
        self.admitted, self._registry = await enrol(self.settings, self._producer, entry,
                                                    teachers=self.spec.teachers)

    async def _close(self) -> None:
        """After the loop drained (batches in hand answered, acked, committed)."""
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()
        if getattr(self, "ledger", None) is not None:
            self.ledger.close()  # after the last answer was acked: release the reservation
        if self._registry is not None:
            await self._registry.stop()
        if self._budget is not None:
            await self._budget.stop()  # and hands back its unused block, likewise
        if hasattr(self, "quota"):
            self.quota.save()
        log.info("participant_stopped", batches=self.batches, answered=self.answered,
                 reused=self.reused)

    # -- the loop ---------------------------------------------------------------------------

    async def _next_batch(self) -> list[Record]:
        """The next micro-batch: what one fetch returns (see `fi_stream.batching`)."""
        assert self._consumer is not None
        got = await poll(self._consumer, IDLE_POLL_MS, self.settings.participant.max_batch)
        self._metrics.lag.update(self._consumer)
        return [r for recs in got.values() for r in recs]

    async def _run(self) -> None:
        """Three stages joined by short queues, so nothing waits on a round trip it need not:

        1. the event loop collects and decodes the next batch,
        2. meanwhile the device work of the previous one runs (on a worker thread when it
           is long, see `_publish`) and its responses are handed to the producer,
        3. acks are awaited in order and offsets committed every `COMMIT_INTERVAL_S` —
           only ever offsets whose responses (and dead letters) are acked: at-least-once.
        """
        compute_q: asyncio.Queue[_Batch | None] = asyncio.Queue(maxsize=2)
        ack_q: asyncio.Queue[_Batch | None] = asyncio.Queue(maxsize=8)
        stages = [asyncio.create_task(self._compute_stage(compute_q, ack_q), name="compute"),
                  asyncio.create_task(self._ack_stage(ack_q), name="ack")]
        try:
            while not self._stopping.is_set() and not any(t.done() for t in stages):
                records = await self._next_batch()
                if records:
                    await compute_q.put(await self._prepare(records))
        finally:
            if not stages[0].done():
                await compute_q.put(None)  # drain: finish the batches in hand, then stop
            await asyncio.gather(*stages)

    async def _prepare(self, records: list[Record]) -> _Batch:
        started = time.perf_counter()
        prepared = prepare([(r.partition, r.value) for r in records], self.spec, now_ms(),
                           self.settings.max_deadline_ms, quota=self._quota_check(records))
        acks = [await self._dlq.send(records[i], exc.reason, exc.detail,
                                     query_id=key_text(records[i]))
                for i, exc in prepared.broken]
        self._metrics.decode_seconds.observe(time.perf_counter() - started)
        self._metrics.queries.labels("dlq").inc(len(prepared.broken))
        for reason, count in prepared.declined().items():
            self._metrics.queries.labels(reason).inc(count)
        return _Batch(records, prepared, acks)

    def _quota_check(self, records: list[Record]) -> Quota | None:
        """Charge a block's answerable rows to its verified client (fi_stream.quota: one
        signature check per record); None: no quotas."""
        if self.quota.share >= 1.0 and self._registry is None:
            return None
        clients = {cid: c.public_key for cid, c in self._registry.clients.items()} \
            if self._registry is not None else {}
        signed = [(r.value or b"", signature_of(r.headers)) for r in records]
        return block_charger(self.quota, signed, clients)

    async def _compute_stage(self, inbox: asyncio.Queue[_Batch | None],
                             outbox: asyncio.Queue[_Batch | None]) -> None:
        try:
            while (batch := await inbox.get()) is not None:
                await self._publish(batch)
                await outbox.put(batch)
        finally:
            await outbox.put(None)

    def _compute(self, prepared: Prepared, limit: int | None = None
                 ) -> tuple[int, int, list[tuple[int, bytes]]]:
        """Replay cached answers to repeated inputs (free), reserve the budget for the rest
        (persisted before anything is published) — at most `limit` fresh answers, what the
        shared budget granted — device work, encoding and signing.
        Returns (answers sent, fresh answers, encoded batches)."""
        began = time.thread_time()  # CPU time: not waits for the GIL, a core or an fsync
        answered: list[int] = []
        fresh = 0

        def reserve(wanted: int) -> int:
            wanted = wanted if limit is None else min(wanted, limit)
            persists = self.ledger.must_persist(wanted)
            granted = self.ledger.reserve(wanted) if wanted else 0
            if persists and wanted:
                self.quota.save()  # upper bounds of the clients' counts, with the ledger's
            return granted

        outputs = np.zeros((0, self.spec.num_classes), np.float32)
        if len(prepared.answerable):
            assert prepared.inputs is not None
            started = time.perf_counter()
            got = self._answer(prepared.inputs, reserve)
            answered, outputs, fresh = got.answered, got.outputs, got.fresh
            if got.fresh:
                self._metrics.device_seconds.observe(time.perf_counter() - started)
            if got.reused:
                self.ledger.count_reused(got.reused)
                self._metrics.reused.inc(got.reused)
                self.reused += got.reused
        started = time.perf_counter()
        encoded = assemble(prepared, answered, outputs, self._signer, now_ms())
        self._metrics.encode_seconds.observe(time.perf_counter() - started)
        self._work_s = time.thread_time() - began
        return len(answered), fresh, encoded

    def _answer(self, inputs: np.ndarray[Any, Any], reserve: Reserve) -> Answers:
        """Every answerable row of the micro-batch in one call (fi_stream.reuse); the
        naive baseline overrides it to answer one row at a time."""
        return answer_batch(inputs, self.cache, reserve, self.engine.infer,
                            self.spec.num_classes)

    async def _publish(self, batch: _Batch) -> None:
        """Reserve, compute and encode; hand the responses to the producer.

        The work goes to a worker thread when it is long (a GPU, a large model: the
        forward releases the GIL, and the loop goes on fetching and heartbeating) or writes
        the ledger (an fsync). Short CPU work runs on the loop: each hop to the thread and
        back waits for the scheduler on a busy machine (digits on 2 cores at 1,650
        queries/s: p99 233 ms inline against 418 ms threaded, median of ten alternating
        runs).
        """
        assert self._producer is not None
        prepared = batch.prepared
        wanted = len(prepared.answerable)
        limit = await self._budget.take(wanted) if self._budget and wanted else None
        if (self.engine.device.type == "cpu" and self._work_s < INLINE_WORK_S
                and not self.ledger.must_persist(wanted)):
            granted, fresh, encoded = self._compute(prepared, limit)
        else:
            granted, fresh, encoded = await asyncio.to_thread(self._compute, prepared, limit)
        if self._budget is not None and limit is not None and fresh < limit:
            self._budget.untake(limit - fresh)  # repeats answered from the cache spent none
        for partition, value in encoded:
            batch.acks.append(await self._producer.send(
                self.topics.responses, value, key=self.participant_id.encode(),
                partition=partition, headers=block_headers(ResponseBlockHeader)))
        self.batches += 1
        self.answered += granted
        self._metrics.batch_size.observe(len(prepared))
        self._metrics.queries.labels("answered").inc(granted)
        self._metrics.queries.labels("budget_exhausted").inc(wanted - granted)

    async def _ack_stage(self, inbox: asyncio.Queue[_Batch | None]) -> None:
        """Await acks in batch order; commit the acked offsets every `COMMIT_INTERVAL_S`,
        off the path that produces responses (also when no batch follows)."""
        assert self._consumer is not None
        acked: dict[TopicPartition, int] = {}
        last_commit = time.monotonic()
        while True:
            timeout = (max(0.0, last_commit + COMMIT_INTERVAL_S - time.monotonic())
                       if acked else None)
            try:
                batch: _Batch | bool | None = await asyncio.wait_for(inbox.get(), timeout)
            except TimeoutError:
                batch = False  # nothing more came in time: commit what is acked
            if batch is None:
                break
            if isinstance(batch, _Batch):
                await asyncio.gather(*batch.acks)
                for record in batch.records:
                    tp = TopicPartition(record.topic, record.partition)
                    acked[tp] = max(acked.get(tp, 0), record.offset + 1)
            if acked and time.monotonic() - last_commit >= COMMIT_INTERVAL_S:
                await self._commit(acked)
                acked.clear()
                last_commit = time.monotonic()
        if acked:
            await self._commit(acked)

    async def _commit(self, acked: dict[TopicPartition, int]) -> None:
        """Commit acked offsets of the partitions this member still owns; a commit the
        group refuses is dropped, never fatal.

        A member that stalled past its session (SIGSTOP, a frozen VM, a broker that paused)
        is no longer in the group: the commit fails with CommitFailedError, aiokafka rejoins
        by itself, and whoever owns the partitions now reads them again from the last
        committed offset. Those queries are answered again (the aggregator keeps one answer
        per participant and query), so at-least-once holds without this commit. Partitions
        revoked meanwhile are left out: aiokafka refuses offsets of unassigned partitions.
        """
        assert self._consumer is not None
        owned = self._consumer.assignment()
        offsets = {tp: offset for tp, offset in acked.items() if tp in owned}
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            self.commits_refused += 1
            log.warning("participant_commit_refused", partitions=len(offsets),
                        detail=str(exc), refused=self.commits_refused)


def make_participant(settings: Settings, *, participant_id: str, model_dir: Path,
                     behaviour: Behaviour = "honest", collusion_secret: bytes = b"",
                     copy_from: str | None = None) -> ParticipantService:
    """The service `settings.participant.pipeline` asks for; a strategic one on request
    (experiments and tests only, fi_stream.behaviours)."""
    if behaviour == "copycat":
        from consumers.copycat import CopycatParticipant

        return CopycatParticipant(settings, participant_id=participant_id, model_dir=model_dir,
                                  copy_from=copy_from)
    kind: type[ParticipantService] = ParticipantService
    if settings.participant.pipeline == "naive":  # the baseline of `fi-stream bench e2e`
        from consumers.naive import NaiveParticipantService

        kind = NaiveParticipantService
    return kind(settings, participant_id=participant_id, model_dir=model_dir,
                behaviour=behaviour, collusion_secret=collusion_secret)
