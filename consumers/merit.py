"""Merit-based incentives, live: once the labels of an incentive window have arrived on
fi.feedback (or `label_wait_s` after the window closed), emit one `shapley` Incentive per
participant, with the window's skill fairness and the rank correlation of its label-free
rewards with merit — the paper's open question, measured as the system runs.

A derived stream, recomputable from the log: one writer (a fixed transactional id fences
a zombie), state rebuilt by reading the log at start, every event in a transaction, so a
window is scored exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TypeAlias

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry, Counter, Gauge

from fi_stream.audit.log import Logged
from fi_stream.audit.rows import RowIndex, response_views
from fi_stream.clock import now_ms
from fi_stream.kafka import make_consumer, make_producer
from fi_stream.kafka.dlq import dead_letter_headers, key_text
from fi_stream.kafka.reading import behind, fetch_records, partitions_of
from fi_stream.merit import METHOD, LabeledQuery, merit_incentives
from fi_stream.metrics import ConsumerLag
from fi_stream.service import Service
from fi_stream.settings import Settings
from fi_stream.validation import label_problem
from schemas import (
    DecodeError,
    Feedback,
    Incentive,
    Result,
    Window,
    decode,
    encode,
    headers,
)
from schemas.blocks import ResponseBlock, decode_response_block, decode_result_block
from schemas.blocks.convert import results_of

log = structlog.get_logger(__name__)

WindowKey = tuple[int, int]  # (partition, seq)
Record: TypeAlias = ConsumerRecord[bytes, bytes]
SourceRef = tuple[str, int, int]  # (topic, partition, offset)


@dataclass
class _Pending:
    """A label-free window waiting for its results and labels."""

    window: Window | None = None
    closed_at_ms: int = 0
    rewards: dict[str, float] = field(default_factory=dict)
    results: list[Result] = field(default_factory=list)


class MeritService(Service):
    name = "merit"

    def __init__(self, settings: Settings, *, label_wait_s: float = 30.0,
                 interval_s: float = 0.5, registry: CollectorRegistry | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.topics = settings.topic_names
        self.label_wait_s = label_wait_s
        self.interval_s = interval_s
        self.metrics_registry = registry if registry is not None else CollectorRegistry()
        self._fairness = Gauge("fi_merit_skill_fairness", "Skill fairness of the last window",
                               registry=self.metrics_registry)
        self._rho = Gauge("fi_merit_rank_correlation",
                          "Spearman(label-free rewards, merit) of the last window",
                          registry=self.metrics_registry)
        self._windows = Counter("fi_merit_windows", "Windows scored", ["outcome"],
                                registry=self.metrics_registry)
        self._lag = ConsumerLag(self.metrics_registry)
        self._pending: dict[WindowKey, _Pending] = defaultdict(_Pending)
        self._done: set[WindowKey] = set()
        #: Per fi.feedback partition: query id → (first label, its record). The window of
        #: aggregator partition p is scored with partition p's labels (fi_stream.merit.
        #: window_labels: the auditor's rule); a later, different label is dead-lettered.
        self._labels: dict[int, dict[str, tuple[int, Record]]] = defaultdict(dict)
        self._feedback_pos: dict[int, int] = {}
        #: Records this service could not use, to dead-letter once caught up; and the
        #: sources already in fi.dlq from it (the log is re-read at every start).
        self._bad: list[tuple[Record, str, str]] = []
        self._dead_lettered: set[SourceRef] = set()
        self._consumer_name = f"{settings.kafka.topic_prefix}fi.merit"
        self._caught_up = False
        self._reader: AIOKafkaConsumer | None = None
        self._lookup: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self.emitted = 0
        self._progress = asyncio.Event()

    async def wait_scored(self, windows: set[WindowKey], timeout: float) -> None:
        """Block until every window in `windows` has been scored (by this or an earlier run)."""
        async with asyncio.timeout(timeout):
            while not windows <= self._done:
                self._progress.clear()
                await self._progress.wait()

    async def _open(self) -> None:
        self._reader = make_consumer(self.settings, group_id=None)
        self._lookup = make_consumer(self.settings, group_id=None)
        await self._reader.start()
        await self._lookup.start()
        tps: list[TopicPartition] = []
        for topic in (self.topics.results, self.topics.feedback, self.topics.incentives,
                      self.topics.dlq):
            tps += await partitions_of(self._reader, topic)
        self._reader.assign(tps)
        await self._reader.seek_to_beginning(*tps)
        # A fixed id: a second instance fences this one instead of scoring twice.
        self._producer = make_producer(
            self.settings, transactional_id=f"{self.settings.kafka.topic_prefix}fi.merit")
        await self._producer.start()
        end = await self._reader.end_offsets(tps)
        while await behind(self._reader, end):  # what is already scored, before scoring
            await self._read(300)
        self._caught_up = True
        await self._flush_dead_letters()
        log.info("merit_started", windows_done=len(self._done), pending=len(self._pending))

    async def _close(self) -> None:
        for client in (self._reader, self._lookup):
            if client is not None:
                await client.stop()
        if self._producer is not None:
            await self._producer.stop()
        log.info("merit_stopped", emitted=self.emitted)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            deadline = time.monotonic() + self.interval_s
            while time.monotonic() < deadline and not self._stopping.is_set():
                await self._read(int(max(1, (deadline - time.monotonic()) * 1000)))
            await self._score_ready()
            await self._flush_dead_letters()

    async def _read(self, timeout_ms: int) -> None:
        assert self._reader is not None
        got = await self._reader.getmany(timeout_ms=timeout_ms)
        self._lag.update(self._reader)
        for tp, records in got.items():
            for record in records:
                try:
                    if tp.topic == self.topics.results:
                        self._on_results(record)
                    elif tp.topic == self.topics.feedback:
                        self._on_feedback(decode(record.value, Feedback), record)
                    elif tp.topic == self.topics.dlq:
                        self._on_dead_letter(record)
                    else:
                        self._on_incentive(decode(record.value, Incentive), record.timestamp)
                except DecodeError as exc:
                    self._bad_record(record, exc.reason, exc.detail)
                except (ValueError, TypeError, KeyError, IndexError) as exc:
                    # A block that decodes but does not convert to its results.
                    self._bad_record(record, "invalid", f"{type(exc).__name__}: {exc}")
            if tp.topic == self.topics.feedback:
                self._feedback_pos[tp.partition] = records[-1].offset + 1

    def _bad_record(self, record: Record, reason: str, detail: str) -> None:
        log.warning("merit_bad_record", topic=record.topic, offset=record.offset,
                    error=f"{reason}: {detail}", key=self._key(record))
        if record.topic != self.topics.dlq:
            self._bad.append((record, reason, detail))

    def _on_results(self, record: Record) -> None:
        """A result block: its rows' results, to their window (one window per block)."""
        results = results_of(decode_result_block(record.value))
        if not results:
            return
        window = results[0].window
        key = (window.partition, window.seq)
        if key not in self._done:
            self._pending[key].results.extend(results)

    def _on_feedback(self, fb: Feedback, record: Record) -> None:
        labels = self._labels[record.partition]
        first = labels.get(fb.query_id)
        if first is None:
            labels[fb.query_id] = (fb.label, record)
        elif first[0] != fb.label:
            self._bad.append((record, "conflicting_label",
                              f"query {fb.query_id} already has label {first[0]} at "
                              f"offset {first[1].offset}; the first label counts"))

    def _on_dead_letter(self, record: Record) -> None:
        h = {k: v.decode(errors="replace") for k, v in record.headers}
        if h.get("consumer") == self._consumer_name:
            with contextlib.suppress(ValueError):
                self._dead_lettered.add((h.get("source-topic", ""),
                                         int(h.get("source-partition", "-1")),
                                         int(h.get("source-offset", "-1"))))

    async def _flush_dead_letters(self) -> None:
        """Dead-letter, in one transaction, each bad record not already in fi.dlq (the
        log is read again at every start, so each source is sent once)."""
        if not self._caught_up or not self._bad:
            return
        assert self._producer is not None
        fresh = []
        for record, reason, detail in self._bad:
            source = (record.topic, record.partition, record.offset)
            if source not in self._dead_lettered:
                self._dead_lettered.add(source)
                fresh.append((record, reason, detail))
        self._bad.clear()
        if not fresh:
            return
        async with self._producer.transaction():
            for record, reason, detail in fresh:
                await self._producer.send(
                    self.topics.dlq, record.value, key=record.key,
                    headers=dead_letter_headers(record, reason, detail, self._consumer_name))
        for record, reason, detail in fresh:
            log.warning("dead_letter", reason=reason, detail=detail, topic=record.topic,
                        partition=record.partition, offset=record.offset,
                        key=self._key(record))

    @staticmethod
    def _key(record: Record) -> str | None:
        """Results and labels are keyed by their query block's id, incentives by participant."""
        return key_text(record)

    def _on_incentive(self, incentive: Incentive, timestamp_ms: int) -> None:
        key = (incentive.window.partition, incentive.window.seq)
        if incentive.method == METHOD:
            self._done.add(key)
            self._progress.set()
            self._pending.pop(key, None)
        elif key not in self._done:
            pending = self._pending[key]
            pending.window = incentive.window
            pending.closed_at_ms = timestamp_ms
            pending.rewards[incentive.participant_id] = incentive.reward

    async def _score_ready(self) -> None:
        now = now_ms()
        for key, pending in sorted(self._pending.items()):
            window = pending.window
            if window is None or len(pending.results) < window.results:
                continue  # its label-free events or some results are not read yet
            labels = self._labels.get(key[0], {})
            labeled = [r for r in pending.results if r.query_id in labels and r.included]
            waited = now - pending.closed_at_ms >= self.label_wait_s * 1000
            if len(labeled) < len([r for r in pending.results if r.included]) and not waited:
                continue
            await self._emit(key, pending, labeled)

    def _labeled_queries(self, labeled: list[Result], index: RowIndex,
                         labels: dict[str, tuple[int, Record]]) -> list[LabeledQuery]:
        """The labelled results whose rows resolve, with a label in range (others are
        dead-lettered as label_out_of_range)."""
        queries = []
        for r in labeled:
            rows = index.rows(r.included)
            label, record = labels[r.query_id]
            if rows is None:
                continue
            problem = label_problem(label, rows.shape[1])
            if problem is not None:
                self._bad.append((record, "label_out_of_range", problem))
                continue
            queries.append(LabeledQuery(participant_ids=[a.participant_id for a in r.included],
                                        outputs=rows, label=label))
        return queries

    async def _emit(self, key: WindowKey, pending: _Pending, labeled: list[Result]) -> None:
        assert self._lookup is not None and self._producer is not None
        assert pending.window is not None
        refs = {(a.partition, a.offset) for r in labeled for a in r.included}
        records = await fetch_records(self._lookup, self.topics.responses, refs)
        blocks: list[Logged[ResponseBlock]] = []
        for (partition, offset), rec in records.items():
            try:
                blocks.append(Logged(decode_response_block(rec.value), partition, offset))
            except DecodeError as exc:  # the aggregator verified it; the log says otherwise
                log.warning("merit_bad_record", topic=rec.topic, offset=rec.offset,
                            error=str(exc))
        queries = self._labeled_queries(labeled, RowIndex(response_views(blocks)),
                                        self._labels.get(key[0], {}))
        incentives = merit_incentives(
            pending.window, queries, pending.rewards,
            budget=self.settings.aggregator.reward_budget,
            feedback_horizon=self._feedback_pos.get(key[0], 0))
        if incentives:
            async with self._producer.transaction():
                for inc in incentives:
                    await self._producer.send(self.topics.incentives, encode(inc),
                                              key=inc.participant_id.encode(),
                                              headers=headers(Incentive))
            first = incentives[0]
            if first.skill_fairness is not None:
                self._fairness.set(first.skill_fairness)
            if first.rank_correlation is not None:
                self._rho.set(first.rank_correlation)
            self.emitted += len(incentives)
        self._windows.labels("scored" if incentives else "unlabeled").inc()
        self._done.add(key)
        self._progress.set()
        del self._pending[key]
        labels = self._labels.get(key[0], {})
        for r in pending.results:
            labels.pop(r.query_id, None)
        log.info("merit_window", partition=key[0], seq=key[1], labeled=len(queries),
                 participants=len(incentives))

