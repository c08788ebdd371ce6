"""Blocks (schemas.blocks): round trips, and nothing but DecodeError out of any bytes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import DecodeError, Privacy, WindowRef
from schemas.blocks import (
    ResponseBlock,
    ResultBlock,
    decode_query_block,
    decode_response_block,
    decode_result_block,
    encode_query_block,
    encode_response_block,
    encode_result_block,
    query_block,
)

IDS = st.text("abcXYZ019_.:-", min_size=1, max_size=12)
PRIVACY = Privacy(clip_norm=1.0, noise_multiplier=0.3)


@st.composite
def query_blocks(draw: st.DrawFn) -> object:
    n = draw(st.integers(1, 40))
    ids = draw(st.lists(IDS, min_size=n, max_size=n, unique=True))
    dtype = draw(st.sampled_from(["<f4", "<f2", "|u1"]))
    width = draw(st.integers(1, 9))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.integers(0, 17, size=(n, width)).astype(dtype)
    times = rng.integers(0, 2**62, size=n)
    return query_block(draw(IDS), draw(IDS), ids, x, created_at_ms=times,
                       deadline_ms=times + 1, input_scale=1 / 16 if dtype == "|u1" else None,
                       quorum=draw(st.integers(1, 5)),
                       strategy=draw(st.none() | st.just("median")))


@given(query_blocks())
def test_query_block_round_trip(block: object) -> None:
    raw = encode_query_block(block)  # type: ignore[arg-type]
    back = decode_query_block(raw)
    for name in ("block_id", "task", "query_ids", "quorum", "strategy", "client_id",
                 "input_scale"):
        assert getattr(back, name) == getattr(block, name)
    for name in ("created_at_ms", "deadline_ms", "inputs"):
        np.testing.assert_array_equal(getattr(back, name), getattr(block, name))
    assert back.inputs.dtype == block.inputs.dtype  # type: ignore[attr-defined]
    assert encode_query_block(back) == raw  # one canonical encoding


def response(n: int = 3, c: int = 10) -> ResponseBlock:
    status = np.zeros(n, np.uint8)
    status[1::2] = 1  # budget_exhausted
    outputs = np.random.default_rng(0).random((n, c), dtype=np.float32)
    outputs[status != 0] = 0
    return ResponseBlock("p1", "batch1", "digits", "v1", PRIVACY, 5, 2, "blk",
                         [f"q{i}" for i in range(n)], outputs, status,
                         {1: "over budget"} if n > 1 else {}, b"s" * 64)


@pytest.mark.parametrize("n", [1, 2, 7])
def test_response_block_round_trip(n: int) -> None:
    block = response(n)
    raw = encode_response_block(block)
    back = decode_response_block(raw)
    assert back.signature == b"s" * 64 and back.signed == raw[:-64]
    np.testing.assert_array_equal(back.outputs, block.outputs)
    np.testing.assert_array_equal(back.status, block.status)
    assert back.details == block.details and back.privacy == PRIVACY
    assert back.reason(0) == "answered"
    assert encode_response_block(back) == raw


def test_declined_row_with_outputs_is_invalid() -> None:
    block = response(3)
    block.outputs[1] = 0.5
    with pytest.raises(ValueError, match="declined row"):
        encode_response_block(block)


def result(n: int = 3, p: int = 2, weights: bool = True) -> ResultBlock:
    rng = np.random.default_rng(1)
    return ResultBlock(
        "blk", "digits", "soft_vote", 1, WindowRef(partition=0, seq=3),
        [f"q{i}" for i in range(n)], [f"p{j}" for j in range(p)],
        np.arange(n, dtype=np.int32), np.zeros(n, np.uint8), rng.random((n, 10)),
        np.full(n, 3), rng.random(n), np.ones((n, p), np.uint8),
        np.full(n, 1), np.full(n, 9), np.full(n, 7),
        rng.random((n, p)) if weights else None, {0: (2, 40), 1: (2, 41)}, {0: "x"},
        [(0, 1, 0)])


@pytest.mark.parametrize("weights", [True, False])
def test_result_block_round_trip(weights: bool) -> None:
    block = result(weights=weights)
    raw = encode_result_block(block)
    back = decode_result_block(raw)
    for name in ("rows", "status", "aggregate", "prediction", "confidence", "roles",
                 "created_at_ms", "deadline_ms", "completed_at_ms"):
        np.testing.assert_array_equal(getattr(back, name), getattr(block, name))
    assert (back.weights is None) == (not weights)
    assert (back.responses, back.reasons, back.copies) == (
        block.responses, block.reasons, block.copies)
    assert back.status_name(0) == "complete"
    assert encode_result_block(back) == raw


DECODERS = (decode_query_block, decode_response_block, decode_result_block)


@settings(max_examples=300)
@given(st.binary(max_size=600))
def test_random_bytes_only_raise_decode_error(raw: bytes) -> None:
    for decode in DECODERS:
        with pytest.raises(DecodeError):
            decode(raw)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([0, 1, 2]), st.data())
def test_mutated_blocks_only_raise_decode_error(which: int, data: st.DataObject) -> None:
    raws = (encode_query_block(query_block("b", "t", ["a", "b"], np.ones((2, 3), np.float32),
                                           created_at_ms=1, deadline_ms=2)),
            encode_response_block(response(3)), encode_result_block(result()))
    raw = bytearray(raws[which])
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        at = data.draw(st.integers(0, len(raw) - 1))
        if op == "flip":
            raw[at] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del raw[at:at + data.draw(st.integers(1, 80))]
        else:
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        if not raw:
            raw = bytearray(b"\0")
    try:
        DECODERS[which](bytes(raw))
    except DecodeError as exc:
        assert "\n" not in str(exc)  # one-line errors


def test_errors_name_the_problem() -> None:
    good = encode_query_block(query_block("b", "t", ["a"], np.ones((1, 3), np.float32),
                                          created_at_ms=1, deadline_ms=2))
    cases = {None: "tombstone", b"short": "prefix", b"XXXX" + good[4:]: "magic",
             good[:4] + b"\x02" + good[5:]: "version", good[:-1]: "past the record",
             good + b"\0": "long",
             good[:5] + b"\x02" + good[6:]: "expected a fi.query_block"}
    for raw, words in cases.items():
        with pytest.raises(DecodeError, match=words):
            decode_query_block(raw)
    with pytest.raises(DecodeError, match="query_ids repeats an id"):
        decode_query_block(encode_query_block(query_block(
            "b", "t", ["a", "a"], np.ones((2, 3), np.float32), created_at_ms=1,
            deadline_ms=2)))
