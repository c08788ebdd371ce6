"""The async client: publish queries, get their Results back.

    async with QueryClient(settings) as client:
        result = await client.infer(x, deadline_ms=500)
        async for i, result in client.stream(inputs, deadline_ms=2000):
            ...

`deadline_ms` is a time budget from now; the Query carries the absolute epoch deadline.
A query the aggregator finds invalid gets a `rejected` Result with its `reason`: `infer`
raises `QueryRejectedError` for it, `stream` yields it (check `result.status`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

import numpy as np
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from uuid6 import uuid7

from fi_stream.clock import now_ms
from fi_stream.errors import FiStreamError
from fi_stream.kafka import make_consumer, make_producer
from fi_stream.kafka.reading import partitions_of
from fi_stream.quota import sign_query
from fi_stream.settings import Settings
from fi_stream.signing import load_private_key
from schemas import DecodeError, Query, Result, Tensor, decode, encode, headers

log = structlog.get_logger(__name__)


class ResultTimeoutError(FiStreamError, TimeoutError):
    """No result arrived: is an aggregator running (`fi-stream aggregator run`)?"""


class QueryRejectedError(FiStreamError, ValueError):
    """The aggregator rejected the query (its Result has status `rejected`); the message
    is its reason, e.g. an input outside the task's published spec."""

    def __init__(self, result: Result) -> None:
        super().__init__(f"query {result.query_id} rejected: {result.reason}")
        self.result = result


#: How long the query producer waits to fill a request (Kafka 4's `linger.ms` default): a
#: client streaming queries sends a request per few queries, not one each (otherwise the
#: broker's busiest source of requests).
QUERY_LINGER_MS = 5


class QueryClient:
    def __init__(self, settings: Settings, *, task: str = "digits", client_id: str = "client",
                 quorum: int = 1, strategy: str | None = None,
                 key: Ed25519PrivateKey | None = None) -> None:
        self.settings = settings
        self.topics = settings.topic_names
        self.task = task
        self.client_id = client_id
        self.quorum = quorum
        self.strategy = strategy
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._waiters: dict[str, asyncio.Future[Result]] = {}
        self._task: asyncio.Task[None] | None = None
        key_file = settings.security.client_key_file
        #: The client's own key (admitted by the operator): it signs every query.
        self._key = key or (load_private_key(key_file) if key_file is not None else None)

    async def __aenter__(self) -> QueryClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        # Results are read from the end as of now: start listening before sending anything.
        self._consumer = make_consumer(self.settings, group_id=None, auto_offset_reset="latest")
        await self._consumer.start()
        tps = await partitions_of(self._consumer, self.topics.results)
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:
            await self._consumer.position(tp)
        self._producer = make_producer(self.settings, linger_ms=QUERY_LINGER_MS)
        await self._producer.start()
        self._task = asyncio.create_task(self._read_results(), name="query-client-results")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        for fut in self._waiters.values():
            fut.cancel()
        self._waiters.clear()

    async def _read_results(self) -> None:
        assert self._consumer is not None
        while True:
            got = await self._consumer.getmany(timeout_ms=200)
            for records in got.values():
                for record in records:
                    if record.key is None or record.key.decode() not in self._waiters:
                        continue  # another client's query (results are keyed by query id)
                    try:
                        result = decode(record.value, Result)
                    except DecodeError as exc:
                        log.warning("bad_result_record", offset=record.offset, error=str(exc),
                                    query_id=record.key.decode())
                        continue
                    if result.status == "rejected":
                        log.warning("query_rejected", query_id=result.query_id,
                                    reason=result.reason)
                    fut = self._waiters.pop(result.query_id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(result)

    def _query(self, x: np.ndarray[Any, Any], deadline_ms: int, now: int) -> Query:
        return Query(query_id=str(uuid7()), task=self.task,
                     input=Tensor.from_numpy(np.asarray(x, dtype=np.float32)),
                     created_at_ms=now, deadline_ms=now + deadline_ms, quorum=self.quorum,
                     strategy=self.strategy, client_id=self.client_id)

    async def submit(self, x: np.ndarray[Any, Any], *, deadline_ms: int | None = None
                     ) -> tuple[Query, asyncio.Future[Result]]:
        """Publish one query; the future resolves with its Result."""
        assert self._producer is not None, "call start() first"
        budget = deadline_ms if deadline_ms is not None else self.settings.default_deadline_ms
        query = self._query(x, budget, now_ms())
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiters[query.query_id] = fut
        value = encode(query)
        hdrs = headers(Query)
        if self._key is not None:  # the participants charge it to this client's quota
            hdrs += sign_query(value, self._key)
        await self._producer.send(self.topics.queries, value,
                                  key=query.query_id.encode(), headers=hdrs)
        return query, fut

    async def infer(self, x: np.ndarray[Any, Any], *, deadline_ms: int | None = None) -> Result:
        """The query's Result; raises `QueryRejectedError` when it was rejected."""
        query, fut = await self.submit(x, deadline_ms=deadline_ms)
        result = await self._await(query, fut)
        if result.status == "rejected":
            raise QueryRejectedError(result)
        return result

    async def _await(self, query: Query, fut: asyncio.Future[Result]) -> Result:
        grace_ms = self.settings.timing.result_grace_ms  # fi_stream.timing: 3 G
        wait_s = (query.deadline_ms - now_ms() + grace_ms) / 1000
        try:
            return await asyncio.wait_for(fut, timeout=max(wait_s, 0.1))
        except TimeoutError:
            self._waiters.pop(query.query_id, None)
            raise ResultTimeoutError(
                f"no result for {query.query_id} within {grace_ms} ms after its deadline;"
                " is an aggregator running (`fi-stream aggregator run`)?") from None

    async def stream(self, inputs: Iterable[np.ndarray[Any, Any]], *,
                     deadline_ms: int | None = None, max_in_flight: int = 2000,
                     ) -> AsyncIterator[tuple[int, Query, Result]]:
        """Send many queries (at most `max_in_flight` unanswered) and yield results as they come."""
        done: asyncio.Queue[tuple[int, Query, Result | BaseException]] = asyncio.Queue()
        slots = asyncio.Semaphore(max_in_flight)
        total = 0

        async def track(i: int, query: Query, fut: asyncio.Future[Result]) -> None:
            try:
                done.put_nowait((i, query, await self._await(query, fut)))
            except BaseException as exc:  # surfaced to the consumer of the stream below
                done.put_nowait((i, query, exc))
            finally:
                slots.release()

        async def feed() -> None:
            nonlocal total
            for i, x in enumerate(inputs):
                await slots.acquire()
                query, fut = await self.submit(x, deadline_ms=deadline_ms)
                trackers.add(asyncio.create_task(track(i, query, fut)))
                total += 1

        trackers: set[asyncio.Task[None]] = set()
        feeder = asyncio.create_task(feed())
        received = 0
        getter: asyncio.Future[tuple[int, Query, Result | BaseException]] | None = None
        try:
            while not (feeder.done() and received == total):
                if feeder.done() and feeder.exception() is not None:
                    raise feeder.exception()  # type: ignore[misc]
                getter = getter or asyncio.ensure_future(done.get())
                waiting: set[asyncio.Future[Any]] = {getter}
                if not feeder.done():
                    waiting.add(feeder)
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    continue
                i, query, outcome = getter.result()
                getter = None
                received += 1
                if isinstance(outcome, BaseException):
                    raise outcome
                yield i, query, outcome
        finally:
            if getter is not None:
                getter.cancel()
            feeder.cancel()
            for t in trackers:
                t.cancel()
