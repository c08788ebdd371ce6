"""QueryClient on blocks, without a broker: what it sends (query blocks, ids, signature,
packing by size) and how result blocks come back as per-query Results (issue 13)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fi_stream.quota import SIGNATURE_HEADER
from fi_stream.settings import Settings, load_settings
from producers.feedback import feedback_key
from producers.query_client import (
    QueryClient,
    QueryRejectedError,
    ResultTimeoutError,
    wire_inputs,
)
from schemas import Result, Tensor, WindowRef
from schemas.blocks import (
    QueryBlock,
    decode_query_block,
    encode_result_block,
    query_id,
)
from schemas.blocks.convert import result_block_of


class FakeProducer:
    """Records every send; `on_send` may answer it (the aggregator's part)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]] = []
        self.on_send: Any = None

    async def send(self, topic: str, value: bytes, *, key: bytes,
                   headers: list[tuple[str, bytes]]) -> None:
        self.sent.append((topic, value, key, headers))
        if self.on_send is not None:
            self.on_send(decode_query_block(value))

    async def stop(self) -> None:
        return None


def client(settings: Settings | None = None, **kwargs: Any
           ) -> tuple[QueryClient, FakeProducer]:
    c = QueryClient(settings or load_settings(None), **kwargs)
    producer = FakeProducer()
    c._producer = producer
    return c, producer


def results(block: QueryBlock, rows: list[int], status: str = "complete") -> bytes:
    """The encoded result block of some rows of `block` (prediction = row)."""
    def vote(n: int) -> dict[str, Any]:
        if status != "complete":
            return {}
        return {"aggregate": Tensor.from_numpy(np.eye(10)[n % 10]), "prediction": n,
                "confidence": 1.0}

    out = [Result(query_id=query_id(block.block_id, n), task=block.task, status=status,
                  **vote(n),
                  reason="no" if status == "rejected" else None,
                  strategy="soft_vote", quorum=block.quorum,
                  created_at_ms=int(block.created_at_ms[n]),
                  deadline_ms=int(block.deadline_ms[n]), completed_at_ms=5,
                  window=WindowRef(partition=0, seq=0)) for n in rows]
    return encode_result_block(result_block_of(out))


async def test_infer_sends_a_signed_block_of_one_and_reads_its_result_block() -> None:
    key = Ed25519PrivateKey.generate()
    c, producer = client(client_id="c1", quorum=2, strategy="median", key=key)
    producer.on_send = lambda b: asyncio.get_running_loop().call_soon(
        c._deliver, results(b, [0]), 0)
    result = await c.infer(np.arange(64, dtype=np.float64), deadline_ms=1000)
    [(topic, value, key_bytes, headers)] = producer.sent
    block = decode_query_block(value)
    assert topic == c.topics.queries and key_bytes == block.block_id.encode()
    assert len(block) == 1 and block.inputs.dtype == np.float32
    assert (block.client_id, block.quorum, block.strategy) == ("c1", 2, "median")
    assert int(block.deadline_ms[0]) - int(block.created_at_ms[0]) == 1000
    sig = dict(headers)[SIGNATURE_HEADER]
    key.public_key().verify(sig, value)  # the client's signature covers the block record
    assert result.query_id == f"{block.block_id}.0" and result.prediction == 0
    assert not c._waiters


async def test_a_rejected_query_raises_with_its_result() -> None:
    c, producer = client()
    producer.on_send = lambda b: asyncio.get_running_loop().call_soon(
        c._deliver, results(b, [0], "rejected"), 0)
    with pytest.raises(QueryRejectedError, match="rejected: no") as info:
        await c.infer(np.zeros(64, np.float32))
    assert info.value.result.status == "rejected"


async def test_submit_block_results_arrive_in_several_result_blocks() -> None:
    c, _ = client()
    block, futures = await c.submit_block(np.zeros((5, 64), np.float32))
    assert block.query_ids == [f"{block.block_id}.{n}" for n in range(5)]
    c._deliver(results(block, [3, 1]), 0)
    assert [f.done() for f in futures] == [False, True, False, True, False]
    c._deliver(b"not a block", 1)  # logged and skipped
    c._deliver(results(block, [0, 2, 4]), 2)
    got = await asyncio.gather(*futures)
    assert [r.prediction for r in got] == [0, 1, 2, 3, 4]
    assert not c._waiters
    other, _ = await c.submit_block(np.zeros((2, 64), np.float32))
    assert other.block_id != block.block_id


async def test_results_not_back_within_the_grace_fail_with_a_timeout() -> None:
    c, _ = client(load_settings(None, timing={"grace_ms": 1}))  # result grace: 3 ms
    _, futures = await c.submit_block(np.zeros((2, 64), np.float32), deadline_ms=1)
    with pytest.raises(ResultTimeoutError, match=r"no result for .*\.0 within"):
        await futures[0]
    with pytest.raises(ResultTimeoutError):
        await futures[1]
    assert not c._waiters


async def test_stream_packs_queries_into_blocks_and_yields_every_result() -> None:
    c, producer = client()
    loop = asyncio.get_running_loop()
    # Answer each block's rows in reverse order, in two result blocks.
    producer.on_send = lambda b: (
        loop.call_soon(c._deliver, results(b, list(range(len(b)))[::-2]), 0),
        loop.call_soon(c._deliver, results(b, list(range(len(b)))[-2::-2]), 1))
    xs = np.random.default_rng(0).random((23, 64)).astype(np.float32)
    got = [item async for item in c.stream(xs, block=8, max_in_flight=100)]
    blocks = [decode_query_block(v) for _, v, _, _ in producer.sent]
    assert [len(b) for b in blocks] == [8, 8, 7]
    assert np.array_equal(np.concatenate([b.inputs for b in blocks]), xs)
    assert sorted(i for i, _, _ in got) == list(range(23))
    for i, query, result in got:
        assert result.query_id == query.query_id == blocks[i // 8].query_ids[i % 8]
        assert np.array_equal(query.input.to_numpy(), xs[i])
    assert not c._waiters


async def test_stream_closes_a_block_before_waiting_for_a_slot() -> None:
    c, producer = client()
    loop = asyncio.get_running_loop()
    producer.on_send = lambda b: loop.call_soon(c._deliver, results(b, list(range(len(b)))), 0)
    got = [item async for item in c.stream(np.zeros((10, 64), np.float32), block=256,
                                           max_in_flight=4)]
    assert len(got) == 10
    assert [len(decode_query_block(v)) for _, v, _, _ in producer.sent] == [4, 4, 2]


async def test_leaving_a_stream_early_forgets_its_blocks() -> None:
    c, producer = client()
    loop = asyncio.get_running_loop()
    producer.on_send = lambda b: loop.call_soon(c._deliver, results(b, [0]), 0)
    async with contextlib.aclosing(c.stream(np.zeros((6, 64), np.float32), block=3)) as it:
        async for _ in it:
            break
    assert not c._waiters


def test_inputs_travel_as_given_or_as_float32() -> None:
    assert wire_inputs(np.zeros(3, np.float64)).dtype == np.float32
    assert wire_inputs(np.zeros(3, np.float16)).dtype == np.float16
    assert wire_inputs(np.zeros(3, np.uint8), 1 / 16).dtype == np.uint8
    with pytest.raises(ValueError, match="uint8"):
        wire_inputs(np.zeros(3, np.float32), 1 / 16)


def test_labels_are_keyed_by_their_query_block() -> None:
    assert feedback_key("0192ab-7.12") == b"0192ab-7"
    with pytest.raises(ValueError):
        feedback_key("not-derived")


async def test_one_sweep_timer_expires_blocks_in_deadline_order_not_send_order() -> None:
    c, _ = client(load_settings(None, timing={"grace_ms": 1}))
    late, [late_fut] = await c.submit_block(np.zeros((1, 64), np.float32), deadline_ms=300)
    answered, [answered_fut] = await c.submit_block(np.zeros((1, 64), np.float32),
                                                    deadline_ms=1)
    _, [early_fut] = await c.submit_block(np.zeros((1, 64), np.float32), deadline_ms=1)
    c._deliver(results(answered, [0]), 0)
    assert (await answered_fut).prediction == 0  # its heap entry is skipped when due
    with pytest.raises(ResultTimeoutError):
        await early_fut
    assert not late_fut.done() and list(c._waiters) == [late.block_id]
    with pytest.raises(ResultTimeoutError):
        await late_fut
    assert not c._waiters and c._timer is None
