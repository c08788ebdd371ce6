"""The async client: publish queries as query blocks, get their Results back.

    async with QueryClient(settings) as client:
        result = await client.infer(x, deadline_ms=500)            # a block of one
        async for i, query, result in client.stream(inputs, deadline_ms=2000):
            ...                                                     # packed into blocks
        block, futures = await client.submit_block(xs)              # xs: [N, ...], one block

Every fi.queries record is a query block (schemas.blocks): `infer`/`submit` send a block of
one, `stream` packs queries by size and linger (producers.block_packer), `submit_block`
sends an [N, …] array as one block. Row n of block B is query `B.n` (schemas.blocks.query_id).
Results come back as result blocks (fi.results, keyed by block id) and are delivered per
query as `Result` views (schemas.blocks.convert.results_of).

`deadline_ms` is a time budget from now; the block carries each query's absolute epoch
deadline. A query the aggregator finds invalid gets a `rejected` Result with its `reason`:
`infer` raises `QueryRejectedError` for it, `stream` yields it (check `result.status`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
from collections.abc import AsyncGenerator, Iterable
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
from producers.block_packer import PendingQuery, QueryBlockPacker
from schemas import DecodeError, Query, Result
from schemas.blocks import (
    QueryBlock,
    QueryBlockHeader,
    block_headers,
    decode_result_block,
    encode_query_block,
    query_block,
    query_id,
)
from schemas.blocks.convert import queries_of, results_of

log = structlog.get_logger(__name__)

Array = np.ndarray[Any, Any]


class ResultTimeoutError(FiStreamError, TimeoutError):
    """No result arrived: is an aggregator running (`fi-stream aggregator run`)?"""


class QueryRejectedError(FiStreamError, ValueError):
    """The aggregator rejected the query (its Result has status `rejected`); the message
    is its reason, e.g. an input outside the task's published spec."""

    def __init__(self, result: Result) -> None:
        super().__init__(f"query {result.query_id} rejected: {result.reason}")
        self.result = result


#: How long the query producer waits to fill a request (Kafka 4's `linger.ms` default), and
#: how long `stream` holds an open block for more queries: a client streaming queries sends
#: a block per few queries, not one each (otherwise the broker's busiest source of records).
QUERY_LINGER_MS = 5
#: Most queries `stream` packs into one block by default.
STREAM_BLOCK = 256
#: Input dtypes a query block carries as they are; anything else is sent as float32.
_WIRE_DTYPES = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.uint8))


def wire_inputs(xs: Any, input_scale: float | None = None) -> Array:
    """`xs` as a block's input buffer: |u1 only with an `input_scale` (raw × scale is what
    the model sees), <f4/<f2 as given, anything else as float32."""
    arr = np.asarray(xs)
    if input_scale is not None:
        if arr.dtype != np.uint8:
            raise ValueError(f"input_scale applies to uint8 inputs; got {arr.dtype}")
        return arr
    return arr if arr.dtype in _WIRE_DTYPES[:2] else arr.astype(np.float32)


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
        #: block id → row → the future of that query's Result (rows still unanswered).
        self._waiters: dict[str, dict[int, asyncio.Future[Result]]] = {}
        #: (expiry on the loop's clock, block id) of every block sent, a heap; one timer
        #: (`_timer`) sweeps it, not one timer per block: a block of one per query would
        #: otherwise pay a TimerHandle and its cancellation each. Entries of blocks already
        #: answered stay until their time comes (skipped then).
        self._expiry: list[tuple[float, str]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        #: Block ids: this client's uuid7 (time-ordered, unique) and a counter.
        self._prefix = uuid7().hex
        self._seq = itertools.count(1)
        key_file = settings.security.client_key_file
        #: The client's own key (admitted by the operator): it signs every query block.
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
        for block_id in list(self._waiters):
            self.forget(block_id)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._expiry.clear()

    def next_block_id(self) -> str:
        """A block id no other block of any client has (uuid7 of this client + counter)."""
        return f"{self._prefix}-{next(self._seq)}"

    # -- results ------------------------------------------------------------------------------

    async def _read_results(self) -> None:
        assert self._consumer is not None
        while True:
            got = await self._consumer.getmany(timeout_ms=200)
            for records in got.values():
                for record in records:
                    # Another client's block (result blocks are keyed by query block id):
                    # skipped without decoding.
                    if record.key is not None and record.key.decode() in self._waiters:
                        self._deliver(record.value, record.offset)

    def _deliver(self, value: bytes | None, offset: int) -> None:
        try:
            block = decode_result_block(value)
        except DecodeError as exc:
            log.warning("bad_result_record", offset=offset, error=str(exc))
            return
        waiting = self._waiters.get(block.block_id)
        if waiting is None:
            return
        for row, result in zip(block.rows.tolist(), results_of(block), strict=True):
            if result.status == "rejected":
                log.warning("query_rejected", query_id=result.query_id, reason=result.reason)
            fut = waiting.pop(row, None)
            if fut is not None and not fut.done():
                fut.set_result(result)
        if not waiting:
            self._drop(block.block_id)

    def _drop(self, block_id: str) -> None:
        self._waiters.pop(block_id, None)

    def forget(self, block_id: str) -> None:
        """Stop waiting for a block's results: its unresolved futures are cancelled."""
        for fut in self._waiters.get(block_id, {}).values():
            fut.cancel()
        self._drop(block_id)

    def _watch(self, loop: asyncio.AbstractEventLoop, block_id: str, wait_s: float) -> None:
        """Expire `block_id` in `wait_s`: one heap push; the sweep timer is (re)armed only
        when this block is due before it fires (a client's blocks mostly come due in the
        order they were sent)."""
        at = loop.time() + wait_s
        heapq.heappush(self._expiry, (at, block_id))
        if self._timer is None or at < self._timer.when():
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(at, self._sweep)

    def _sweep(self) -> None:
        """Expire the blocks whose time came; rearm for the next, at most every 50 ms."""
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._expiry and self._expiry[0][0] <= now:
            _, block_id = heapq.heappop(self._expiry)
            if block_id in self._waiters:
                self._expire(block_id)
        if self._expiry:
            self._timer = loop.call_at(max(self._expiry[0][0], now + 0.05), self._sweep)

    def _expire(self, block_id: str) -> None:
        """Grace is over: the block's unanswered queries fail with ResultTimeoutError."""
        grace_ms = self.settings.timing.result_grace_ms  # fi_stream.timing: 3 G
        for row, fut in self._waiters.get(block_id, {}).items():
            if not fut.done():
                fut.set_exception(ResultTimeoutError(
                    f"no result for {query_id(block_id, row)} within {grace_ms} ms after its"
                    " deadline; is an aggregator running (`fi-stream aggregator run`)?"))
        self._drop(block_id)

    # -- sending ------------------------------------------------------------------------------

    def make_block(self, xs: Any, *, deadline_ms: int | None = None,
                   input_scale: float | None = None) -> QueryBlock:
        """A block of this client's task, quorum, strategy and id: one row per xs[n]."""
        budget = deadline_ms if deadline_ms is not None else self.settings.default_deadline_ms
        now = now_ms()
        return query_block(self.next_block_id(), self.task, wire_inputs(xs, input_scale),
                           created_at_ms=now, deadline_ms=now + budget,
                           input_scale=input_scale, quorum=self.quorum,
                           strategy=self.strategy, client_id=self.client_id)

    async def send_block(self, block: QueryBlock) -> list[asyncio.Future[Result]]:
        """Publish a built block (its id must be new); row n's future resolves with the
        Result of query `block.block_id.n`, or fails with ResultTimeoutError `result grace`
        after the block's last deadline."""
        assert self._producer is not None, "call start() first"
        if block.block_id in self._waiters:
            raise ValueError(f"block {block.block_id} was already sent by this client")
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Result]] = [loop.create_future() for _ in range(len(block))]
        self._waiters[block.block_id] = dict(enumerate(futures))
        deadlines = block.deadline_ms
        last = int(deadlines[0]) if deadlines.size == 1 else int(deadlines.max())
        wait_ms = last - now_ms() + self.settings.timing.result_grace_ms
        self._watch(loop, block.block_id, max(wait_ms / 1000, 0.1))
        value = encode_query_block(block)
        hdrs = block_headers(QueryBlockHeader)
        if self._key is not None:  # the participants charge it to this client's quota
            hdrs += sign_query(value, self._key)
        try:
            await self._producer.send(self.topics.queries, value,
                                      key=block.block_id.encode(), headers=hdrs)
        except BaseException:
            self.forget(block.block_id)
            raise
        return futures

    async def submit_block(self, xs: Any, *, deadline_ms: int | None = None,
                           input_scale: float | None = None
                           ) -> tuple[QueryBlock, list[asyncio.Future[Result]]]:
        """Publish the rows of `xs` ([N, …]) as one block; one future per row."""
        block = self.make_block(xs, deadline_ms=deadline_ms, input_scale=input_scale)
        return block, await self.send_block(block)

    async def submit(self, x: Array, *, deadline_ms: int | None = None
                     ) -> tuple[Query, asyncio.Future[Result]]:
        """Publish one query (a block of one); the future resolves with its Result."""
        block, [fut] = await self.submit_block(np.asarray(x)[None], deadline_ms=deadline_ms)
        return queries_of(block)[0], fut

    async def infer(self, x: Array, *, deadline_ms: int | None = None) -> Result:
        """The query's Result; raises `QueryRejectedError` when it was rejected."""
        # Not `submit`: its Query view would cost more than the block (nobody reads it here).
        _, [fut] = await self.submit_block(np.asarray(x)[None], deadline_ms=deadline_ms)
        result = await fut
        if result.status == "rejected":
            raise QueryRejectedError(result)
        return result

    async def infer_block(self, xs: Any, *, deadline_ms: int | None = None,
                          input_scale: float | None = None) -> list[Result]:
        """The Results of the rows of `xs` sent as one block, in row order (rejected ones
        included: check `status`)."""
        _, futures = await self.submit_block(xs, deadline_ms=deadline_ms,
                                             input_scale=input_scale)
        return list(await asyncio.gather(*futures))

    # -- streaming ----------------------------------------------------------------------------

    async def stream(self, inputs: Iterable[Array], *, deadline_ms: int | None = None,
                     max_in_flight: int = 2000, block: int = STREAM_BLOCK,
                     linger_ms: int = QUERY_LINGER_MS,
                     ) -> AsyncGenerator[tuple[int, Query, Result], None]:
        """Send many queries (at most `max_in_flight` unanswered), packed into blocks of at
        most `block` (a block also closes after `linger_ms`, or when the stream would wait
        for a slot), and yield (input index, query, result) as results come. Leaving early:
        close the generator (`contextlib.aclosing`) and its unanswered queries are
        forgotten at once (otherwise when it is collected)."""
        feed = _Feed(self, deadline_ms, max_in_flight, block, linger_ms)
        feeder = asyncio.create_task(feed.run(inputs))
        received = 0
        getter: asyncio.Future[tuple[int, Query, Result | BaseException]] | None = None
        try:
            while not (feeder.done() and received == feed.total):
                if feeder.done() and feeder.exception() is not None:
                    raise feeder.exception()  # type: ignore[misc]
                getter = getter or asyncio.ensure_future(feed.done.get())
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
            with contextlib.suppress(BaseException):
                await feeder
            for block_id in feed.sent:
                self.forget(block_id)


class _Feed:
    """The sending half of `QueryClient.stream`: inputs → packer → blocks, one slot per
    unanswered query, each result (or failure) queued as (index, query, outcome)."""

    def __init__(self, client: QueryClient, deadline_ms: int | None, max_in_flight: int,
                 block: int, linger_ms: int) -> None:
        self.client = client
        self.budget = (deadline_ms if deadline_ms is not None
                       else client.settings.default_deadline_ms)
        self.slots = asyncio.Semaphore(max_in_flight)
        self.packer = QueryBlockPacker(max_block=block, linger_ms=linger_ms,
                                       block_prefix=client.next_block_id())
        self.done: asyncio.Queue[tuple[int, Query, Result | BaseException]] = asyncio.Queue()
        self.total = 0  # inputs offered
        self.first = 0  # input index of the next block's row 0
        self.sent: list[str] = []

    async def run(self, inputs: Iterable[Array]) -> None:
        c = self.client
        for x in inputs:
            if self.slots.locked():  # about to wait for results: what is packed goes now
                await self.send(self.packer.flush())
            await self.slots.acquire()
            now = now_ms()
            query = PendingQuery(task=c.task, input=wire_inputs(x), created_at_ms=now,
                                 deadline_ms=now + self.budget, quorum=c.quorum,
                                 strategy=c.strategy, client_id=c.client_id)
            self.total += 1
            await self.send(self.packer.offer(query, now) + self.packer.due(now))
        await self.send(self.packer.flush())

    async def send(self, blocks: list[QueryBlock]) -> None:
        for block in blocks:
            first, self.first = self.first, self.first + len(block)
            self.sent.append(block.block_id)
            futures = await self.client.send_block(block)
            for row, (query, fut) in enumerate(zip(queries_of(block), futures, strict=True)):
                fut.add_done_callback(functools.partial(self._settled, first + row, query))

    def _settled(self, i: int, query: Query, fut: asyncio.Future[Result]) -> None:
        self.slots.release()
        outcome: Result | BaseException = (
            asyncio.CancelledError() if fut.cancelled() else fut.exception() or fut.result())
        self.done.put_nowait((i, query, outcome))
