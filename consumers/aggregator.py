"""The aggregator: joins responses to queries per partition, emits one result block per
query block (the results of its rows settled together) and per-window Incentive events, in
Kafka transactions together with its input offsets.

Query blocks and response blocks are read as per-query views (consumers.aggregator_blocks):
the join, the results and the incentive windows are per query, as on the per-query wire.

Offsets advance only up to the oldest record an open query still needs, so a restart
re-reads exactly what it must to rebuild its joins.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any, TypeAlias

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry

from consumers.aggregator_blocks import RESULT_HEADERS, ResultBlocks, Settled, read_query_block
from consumers.aggregator_checks import check_record
from consumers.aggregator_commit import (
    FailingRebalance,
    Out,
    Transactions,
    dead_letter,
    emitted_since,
)
from consumers.aggregator_metrics import AggregatorMetrics
from consumers.aggregator_windows import Histories
from fi_stream.batching import held_fetch
from fi_stream.clock import now_ms
from fi_stream.copycat import screen_copies
from fi_stream.join import JoinTable, OpenQuery, results_mark
from fi_stream.kafka import make_admin, make_consumer, make_producer
from fi_stream.kafka.fencing import enable_group_fencing, fetch_stable_offsets
from fi_stream.kafka.reading import poll
from fi_stream.registry import RegistryView
from fi_stream.results import Batched, build_result, soft_vote_in_batches, unanswered_result
from fi_stream.service import Service
from fi_stream.settings import Settings
from fi_stream.validation import QueryHeader, block_problems, readable_block_headers, task_spec
from schemas import DecodeError, ResultStatus

log = structlog.get_logger(__name__)

Record: TypeAlias = ConsumerRecord[bytes, bytes]

#: A fetch this large returns before `aggregator.fetch_wait_ms` (only under heavy load).
AGGREGATOR_FETCH_MIN_BYTES = 1 << 20
#: The broker aborts a transaction left open this long. A member frozen mid-transaction
#: holds back fi.results' last stable offset (every read_committed reader waits) and the
#: next owner's offset fetch until then; transactions normally take milliseconds.
TRANSACTION_TIMEOUT_MS = 10_000


class AggregatorService(Service):
    name = "aggregator"
    def __init__(self, settings: Settings, *, instance_id: str | None = None,
                 group_id: str = "fi.aggregator",
                 registry: CollectorRegistry | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.topics = settings.topic_names
        self.group_id = f"{settings.kafka.topic_prefix}{group_id}"
        self.instance_id = instance_id or f"{socket.gethostname()}-{os.getpid()}"
        self.metrics_registry = registry if registry is not None else CollectorRegistry()
        self._metrics = AggregatorMetrics(self.metrics_registry)
        cfg = settings.aggregator
        self.join = JoinTable(pending_ttl_ms=cfg.pending_response_ttl_ms)
        self.registry = RegistryView(settings)
        #: Per partition: the incentive window and the stateful strategies' history.
        self._history = Histories(cfg)
        #: Per resumed partition: (queries end offset at resume, committed results_from):
        #: the inputs of `results_mark` for queries a former owner may have answered.
        self._replay: dict[int, tuple[int, int]] = {}
        self._owned: set[int] = set()
        self._tx = Transactions(self.topics, self.join, self._owned, self._resume_state)
        #: Results of the current pass, by query block (one record each at its end).
        self._results = ResultBlocks()
        self._lock = asyncio.Lock()  # the poll loop and rebalance callbacks share the state
        self._wake = asyncio.Event()  # the committer has work (or, with _closing, must end)
        self._closing = False
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self.emitted = 0

    async def _open(self) -> None:
        await self.registry.start()
        self._producer = make_producer(
            self.settings, transactional_id=f"{self.group_id}.{self.instance_id}",
            transaction_timeout_ms=TRANSACTION_TIMEOUT_MS)
        enable_group_fencing(self._producer)
        await self._producer.start()
        self._admin = make_admin(self.settings)
        await self._admin.start()
        # Range assignment gives a member the same partition numbers of both co-partitioned
        # topics, so every query meets its responses in one member.
        self._consumer = make_consumer(
            self.settings, group_id=self.group_id,
            partition_assignment_strategy=(RangePartitionAssignor,),
            **held_fetch(AGGREGATOR_FETCH_MIN_BYTES, self.settings.aggregator.fetch_wait_ms),
        )
        await self._consumer.start()
        self._consumer.subscribe([self.topics.queries, self.topics.responses],
                                 listener=FailingRebalance(self))
        log.info("aggregator_started", instance=self.instance_id,
                 participants=sorted(self.registry.participants))

    async def _close(self) -> None:
        """After the loop's last transaction. Open queries stay uncommitted and are rebuilt
        from the log by the next owner of their partitions."""
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()
        if self._admin is not None:
            await self._admin.close()
        await self.registry.stop()
        log.info("aggregator_stopped", emitted=self.emitted, open=len(self.join.open))

    # -- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        """Two tasks: the poll loop joins and emits into the outbox; the committer runs one
        transaction after another, each with everything emitted while the last one was in
        flight. The loop never waits on a transaction's five round trips."""
        committer = asyncio.create_task(self._commit_loop(), name="aggregator-commit")
        try:
            await self._poll_loop(committer)
        finally:
            self._closing = True  # the committer's last transaction, then it returns
            self._wake.set()
            await committer

    async def _poll_loop(self, committer: asyncio.Task[None]) -> None:
        assert self._consumer is not None
        while not self._stopping.is_set() and not committer.done():
            now = now_ms()
            nxt = self.join.next_deadline_ms()
            wait = 100 if nxt is None else max(0, min(100, nxt - now))
            got = await poll(self._consumer, wait, 10_000)
            async with self._lock:
                now = now_ms()
                for tp, records in got.items():
                    if tp.partition not in self._owned:
                        continue  # fetched just before a revocation: the new owner reads it
                    position = self._tx.positions.get(tp, 0)
                    if records[0].offset < position:
                        # Records fetched while on_assigned awaited the stable offsets come
                        # from the consumer's own start (never past that offset) and are
                        # fetched again after its seek: each offset is read once.
                        records = [r for r in records if r.offset >= position]
                    for record in records:
                        if record.topic == self.topics.queries:
                            self._on_query(record, now)
                        else:
                            self._on_responses(record, now)
                    if records:
                        self._tx.positions[tp] = records[-1].offset + 1
                await self._emit_ready(now_ms())
                self._metrics.lag.update(self._consumer)
            self._wake.set()

    async def _commit_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            final = self._closing
            async with self._lock:
                assert self._consumer is not None and self._producer is not None
                transaction = self._tx.begin(self._consumer, self._producer, force=final)
            if transaction is not None:
                await transaction
            if final:
                if self._tx.outbox:  # no longer a member: the next owner emits these
                    log.warning("aggregator_partitions_lost", discarded=len(self._tx.outbox))
                return

    def _on_query(self, record: Record, now: int) -> None:
        """Open the block's queries, or settle them at once: `rejected` when invalid (for a
        block that does not decode, every row when its id and size can be read),
        `insufficient` when no registered participant serves the task."""
        try:
            block, queries = read_query_block(record.value)
        except DecodeError as exc:
            self._dead_letter(record, exc.reason, exc.detail)
            for header in readable_block_headers(record.value) or ():
                self._settle_now(header, record.partition, now, "rejected",
                                 f"{exc.reason}: {exc.detail}")
            return
        serving = self.registry.serving(block.task)
        problems = block_problems(block, task_spec(self.registry.participants.values(),
                                                   block.task), self.settings.max_deadline_ms)
        until, replay_from = self._replay.get(record.partition, (0, 0))
        mark = results_mark(record.offset, until, replay_from,
                            self._tx.results_next.get(record.partition, 0))
        unserved = f"unserved: no registered participant serves task {block.task}"
        duplicates = 0
        for q, problem in zip(queries, problems, strict=True):
            if problem is not None or not serving:
                self._settle_now(QueryHeader(q.query_id, q.task, q.created_at_ms,
                                             q.deadline_ms, q.quorum), record.partition, now,
                                 "rejected" if problem else "insufficient", problem or unserved)
            elif self.join.add_query(q, record.partition, record.offset, serving,
                                     results_mark=mark) == "duplicate":
                duplicates += 1
        if duplicates:
            self._dead_letter(record, "duplicate_query",
                              f"{duplicates} of the {len(queries)} query ids of block "
                              f"{block.block_id} were already answered or are open")

    def _settle_now(self, header: QueryHeader, partition: int, now: int,
                    status: ResultStatus, reason: str) -> None:
        """Emit the result of a query nobody is asked about, once (a re-read after a
        restart finds it among the results already emitted)."""
        if self.join.settle_without_join(header.query_id, partition, now) != "open":
            return
        result = unanswered_result(header, status=status, reason=reason,
                                   strategy=self.settings.aggregator.strategy,
                                   completed_at_ms=now,
                                   window=self._history.window(partition, now).ref)
        self._publish_result(Settled(result), partition, now)
        log.info("query_settled_now", query_id=header.query_id, status=status, reason=reason)

    def _on_responses(self, record: Record, now: int) -> None:
        """A response block, verified against its participant's registered key, joined as
        its per-query view (convert.response_batch_of)."""
        batch, verdict = check_record(record.value, self.registry.participants,
                                      self.topics.registry)
        if verdict.dead_letter is not None:
            self._dead_letter(record, *verdict.dead_letter)
        exclusions = verdict.exclusions
        if batch is None or exclusions is None:
            return
        for why in exclusions:
            if why is not None:
                self._metrics.excluded.labels(why).inc()
        self.join.add_batch(batch, record.partition, record.offset, now,
                            exclusions if any(w is not None for w in exclusions) else None)

    def _caught_up(self, partition: int) -> bool:
        """Has every committed response of the partition been read (as of the last fetch)?"""
        assert self._consumer is not None
        tp = TopicPartition(self.topics.responses, partition)
        lso = self._consumer.last_stable_offset(tp)
        return lso is not None and self._tx.positions.get(tp, 0) >= lso

    async def _emit_ready(self, now: int) -> None:
        settled = self.join.take_settled()
        batched = soft_vote_in_batches(
            [oq for oq in settled if self._strategy(oq) == "soft_vote"], self._noise_std,
            (self.settings.aggregator.incentive_method,))
        for oq in settled:
            self._emit(oq, now, batched.get(oq.query.query_id))
        for oq in self.join.take_due(now):
            if oq.query.query_id not in self.join.open:
                continue
            if (now < oq.query.deadline_ms + self.settings.timing.lag_grace_ms
                    and not self._caught_up(oq.partition)):
                # Responses written before the deadline may still be unread: look again soon.
                self.join.defer(oq, now + 20)
                continue
            self._emit(oq, now)
        for pid, partition in self.join.late_after_result:
            self._history.window(partition, now).add_late(pid)
            self._metrics.late.inc()
            self._metrics.outcome(pid, "late")
        self.join.late_after_result.clear()
        for partition, block_id, value, rows in self._results.take():
            # Results go to the query's partition number: a restarted owner of that
            # partition finds what it already emitted on the same partition of fi.results.
            self._tx.outbox.append(Out(self.topics.results, partition, block_id.encode(),
                                       value, RESULT_HEADERS))
            for s in rows:  # in log order, as the audit replays the windows
                self._history.add(partition, now, s.result, s.ids, s.outputs, s.batched)
        for incentive in self._history.close_due(now):
            self._tx.send(self.topics.incentives, None, incentive.participant_id, incentive)
        self.join.expire(now)
        self._metrics.pass_done(len(self.join.open), self.join.duplicates)

    def _strategy(self, oq: OpenQuery) -> str:
        """The query's strategy, or the configured one when it names none (a query naming
        an unknown one was rejected before it was opened: fi_stream.validation)."""
        return oq.query.strategy or self.settings.aggregator.strategy

    def _emit(self, oq: OpenQuery, now: int, batched: Batched | None = None) -> None:
        strategy = self._strategy(oq)
        window = self._history.window(oq.partition, now)
        weights = self._history.weights(oq.partition, strategy)
        # Copies of another participant's answer are left out (and counted): see copycat.py.
        copied = ([] if batched is not None and batched.no_copies
                  else screen_copies(oq, self._noise_std))
        if copied:
            batched = None
            log.warning("copied_answers", query_id=oq.query.query_id,
                        copies={a.participant_id: of for a, of in copied})
        result, ids, outputs = build_result(oq, strategy=strategy, completed_at_ms=now,
                                            window=window.ref, weights=weights,
                                            batched=batched, copied=copied)
        self.join.close(oq, now)
        self._publish_result(Settled(result, ids, outputs, batched if batched is not None
                                     and outputs is batched.outputs else None),
                             oq.partition, now)
        log.debug("result", query_id=result.query_id, status=result.status,
                  included=len(result.included), missing=result.missing)

    def _publish_result(self, settled: Settled, partition: int, now: int) -> None:
        """Into the pass's result blocks (written, and given to the windows, at its end)."""
        self._results.add(partition, settled)
        self.emitted += 1
        self._metrics.result(settled.result, now)

    def _noise_std(self, participant_id: str) -> float:
        """The noise std σ·C the participant registered (0: unknown, never flagged)."""
        entry = self.registry.participants.get(participant_id)
        return 0.0 if entry is None else entry.privacy.clip_norm * entry.privacy.noise_multiplier

    def _dead_letter(self, record: Record, reason: str, detail: str) -> None:
        """Into the same transaction as the offsets that move past the bad record."""
        self._tx.outbox.append(dead_letter(record, reason, detail, self.topics, self.group_id))
        self._metrics.dlq.labels(reason).inc()

    def _resume_state(self, partition: int) -> str:
        """The commit metadata of the partition's queries offset: where in fi.results a
        new owner looks for results already emitted, and the partition's history."""
        mark = self.join.oldest_results_mark(partition)
        scan_from = self._tx.results_next.get(partition, 0) if mark is None else mark
        return orjson.dumps({"results_from": scan_from,
                             **self._history.resume_state(partition)}).decode()

    # -- rebalances -----------------------------------------------------------------------------

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Commit what is emitted, then forget the partitions (the new owner rebuilds them).

        A member that lost its partitions (the coordinator forgot it, or refused its last
        transaction) cannot commit: it discards what it holds, which the new owner emits.
        """
        async with self._lock:
            if self._producer is not None and self._consumer is not None:
                await self._tx.commit_now(self._consumer, self._producer)
            if self._tx.outbox:  # nothing could be committed: the partitions were lost
                log.warning("aggregator_partitions_lost", discarded=len(self._tx.outbox),
                            partitions=sorted({tp.partition for tp in revoked}))
                self._tx.outbox.clear()
            for partition in {tp.partition for tp in revoked}:
                self.join.drop_partition(partition)
                self._history.drop(partition)
                self._owned.discard(partition)
                self._replay.pop(partition, None)
            self._tx.forget(revoked)

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Resume each partition from its commit metadata and the results log.

        The committed offsets are read once no transaction (a former owner's) has offsets
        for them pending, and the consumer reads from exactly there.
        """
        assert self._admin is not None and self._consumer is not None
        async with self._lock:
            # The broker looks for timed-out transactions every 10 s (its default), so a
            # frozen former owner's transaction ends within the timeout plus that.
            committed = await fetch_stable_offsets(
                self._admin, self.group_id, sorted(assigned),
                timeout_s=TRANSACTION_TIMEOUT_MS / 1000 + 20)
            starts = await self._consumer.beginning_offsets(sorted(assigned))
            ends = await self._consumer.end_offsets(
                sorted(tp for tp in assigned if tp.topic == self.topics.queries))
            for tp in assigned:
                meta = committed.get(tp)
                # Known from the start, so every later transaction carries this partition's
                # resume state even before a new record of it is read.
                position = meta.offset if meta is not None else starts[tp]
                self._tx.positions[tp] = self._tx.committed[tp] = position
                self._consumer.seek(tp, position)
                if tp.topic == self.topics.queries:
                    state = orjson.loads(meta.metadata) if meta and meta.metadata else {}
                    await self._resume(tp.partition, state)
                    self._replay[tp.partition] = (ends[tp], int(state.get("results_from", 0)))
                    self._owned.add(tp.partition)

    async def _resume(self, partition: int, state: dict[str, Any]) -> None:
        window = state.get("window")
        self._history.resume(partition, state)
        emitted, end = await emitted_since(self.settings, self.topics.results, partition,
                                           int(state.get("results_from", 0)))
        self.join.mark_emitted(partition, emitted)
        self._tx.results_next[partition] = end
        log.info("aggregator_resumed", partition=partition, results_from=state.get("results_from"),
                 results_seen=len(emitted), window=window and window.get("seq"))
