"""Blocks (schemas.blocks): round trips, and nothing but DecodeError out of any bytes."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import DecodeError, Privacy, WindowRef
from schemas.blocks import (
    ResponseBlock,
    ResultBlock,
    block_kind,
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
    dtype = draw(st.sampled_from(["<f4", "<f2", "|u1"]))
    width = draw(st.integers(1, 9))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.integers(0, 17, size=(n, width)).astype(dtype)
    times = rng.integers(0, 2**62, size=n)
    return query_block(draw(IDS), draw(IDS), x, created_at_ms=times,
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
    assert block_kind(raw) == 1 and len(back) == len(block)  # type: ignore[arg-type]
    assert back.query_ids == [f"{back.block_id}.{n}" for n in range(len(back))]


def response(n: int = 3, c: int = 10, spans: list[tuple[str, int]] | None = None
             ) -> ResponseBlock:
    status = np.zeros(n, np.uint8)
    status[1::2] = 1  # budget_exhausted
    outputs = np.random.default_rng(0).random((n, c), dtype=np.float32)
    outputs[status != 0] = 0
    return ResponseBlock("p1", "batch1", "digits", "v1", PRIVACY, 5, 2,
                         spans if spans is not None else [("blk", n)], outputs, status,
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
    assert block_kind(raw) == 2 and back.spans == [("blk", n)]


def test_response_record_of_several_blocks() -> None:
    raw = encode_response_block(response(6, spans=[("a", 2), ("b.x", 1), ("c", 3)]))
    back = decode_response_block(raw)
    assert back.spans == [("a", 2), ("b.x", 1), ("c", 3)] and len(back) == 6
    assert back.query_ids == ["a.0", "a.1", "b.x.0", "c.0", "c.1", "c.2"]
    assert back.span_rows() == [("a", 0, 2), ("b.x", 2, 3), ("c", 3, 6)]


@pytest.mark.parametrize(("spans", "words"), [
    ([("a", 2), ("a", 1)], "repeats a block id"), ([("a", 2)], "must have 2 rows"),
    ([("a", 3), ("b", 0)], "greater than or equal to 1"), ([], "at least 1")])
def test_spans_must_cover_the_rows_once(spans: list[tuple[str, int]], words: str) -> None:
    """Built past the encoder's own check: the reader is the guard."""
    good = response(3)
    raw = encode_response_block(good)
    text = raw[12:12 + int.from_bytes(raw[8:12], "little")]
    bad = text.replace(b'"blocks":[{"block_id":"blk","rows":3}]', b'"blocks":' + bytes(
        str([{"block_id": b, "rows": r} for b, r in spans]).replace("'", '"').replace(
            " ", ""), "ascii"))
    assert bad != text
    with pytest.raises(DecodeError, match=words):
        decode_response_block(raw[:8] + len(bad).to_bytes(4, "little") + bad
                              + raw[12 + len(text):])


def test_declined_row_with_outputs_is_invalid() -> None:
    block = response(3)
    block.outputs[1] = 0.5
    with pytest.raises(ValueError, match="declined row"):
        encode_response_block(block)


def result(n: int = 3, p: int = 2, weights: bool = True) -> ResultBlock:
    rng = np.random.default_rng(1)
    roles = np.ones((n, p), np.uint8)
    roles[0, 1] = 3  # copied
    return ResultBlock(
        "blk", "digits", "soft_vote", 1, WindowRef(partition=0, seq=3),
        [f"p{j}" for j in range(p)],
        np.arange(n, dtype=np.int32)[::-1], np.zeros(n, np.uint8), rng.random((n, 10)),
        np.full(n, 3), rng.random(n), roles, np.tile(np.arange(p, dtype=np.int32), (n, 1)),
        np.tile(np.arange(n, dtype=np.int32)[:, None], (1, p)),
        np.full(n, 1), np.full(n, 9), np.full(n, 7),
        rng.random((n, p)) if weights else None, [(2, 40), (2, 41)], {0: "x"},
        [(0, 1, 0)])


@pytest.mark.parametrize("weights", [True, False])
def test_result_block_round_trip(weights: bool) -> None:
    block = result(weights=weights)
    raw = encode_result_block(block)
    back = decode_result_block(raw)
    for name in ("rows", "status", "aggregate", "prediction", "confidence", "roles",
                 "response", "index", "created_at_ms", "deadline_ms", "completed_at_ms"):
        np.testing.assert_array_equal(getattr(back, name), getattr(block, name))
    assert (back.weights is None) == (not weights)
    assert (back.responses, back.reasons, back.copies) == (
        block.responses, block.reasons, block.copies)
    assert back.status_name(0) == "complete"
    assert encode_result_block(back) == raw
    assert block_kind(raw) == 3 and back.query_ids == ["blk.2", "blk.1", "blk.0"]


@pytest.mark.parametrize(("change", "words"), [
    (lambda b: b.rows.__setitem__(1, 2), "distinct"),
    (lambda b: b.rows.__setitem__(1, -1), "distinct"),
    (lambda b: b.roles.__setitem__((0, 0), 5), "unknown code"),
    (lambda b: b.roles.__setitem__((0, 0), 10), "unknown code"),  # 10 + "answered"
    (lambda b: b.response.__setitem__((0, 0), 2), "response"),
    (lambda b: b.index.__setitem__((0, 0), -1), "response"),
    (lambda b: b.roles.__setitem__((0, 0), 0), "response"),  # missing, with an answer
    (lambda b: b.status.__setitem__(0, 4), "status codes")])
def test_result_block_values_are_checked(change: object, words: str) -> None:
    block = result()
    change(block)  # type: ignore[operator]
    with pytest.raises(DecodeError, match=words):
        decode_result_block(encode_result_block(block))


def test_block_kind() -> None:
    with pytest.raises(DecodeError, match="magic"):
        block_kind(b'{"query_id": "a"}')
    with pytest.raises(DecodeError, match="tombstone"):
        block_kind(None)
    raw = encode_result_block(result())
    with pytest.raises(DecodeError, match="kind 7"):
        block_kind(raw[:5] + b"\x07" + raw[6:])


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
    raws = (encode_query_block(query_block("b", "t", np.ones((2, 3), np.float32),
                                           created_at_ms=1, deadline_ms=2)),
            encode_response_block(response(5, spans=[("b", 2), ("c", 3)])),
            encode_result_block(result()))
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
    good = encode_query_block(query_block("b", "t", np.ones((1, 3), np.float32),
                                          created_at_ms=1, deadline_ms=2))
    cases = {None: "tombstone", b"short": "prefix", b"XXXX" + good[4:]: "magic",
             good[:4] + b"\x02" + good[5:]: "version", good[:-1]: "past the record",
             good + b"\0": "long",
             good[:5] + b"\x02" + good[6:]: "expected a fi.query_block"}
    for raw, words in cases.items():
        with pytest.raises(DecodeError, match=words):
            decode_query_block(raw)
    with pytest.raises(DecodeError, match=r"1\.\.65536 rows"):
        decode_query_block(encode_query_block(query_block(
            "b", "t", np.ones((0, 3), np.float32), created_at_ms=1, deadline_ms=2)))
    with pytest.raises(DecodeError, match="block_id"):  # derived ids must fit an event id
        decode_query_block(encode_query_block(query_block(
            "b" * 123, "t", np.ones((1, 3), np.float32), created_at_ms=1, deadline_ms=2)))


# -- the usual query block's fast decode is the generic one, on any record near it -----------

_N = 2
_CHANGES: list[tuple[tuple[str, ...], object]] = [
    (("block_id",), "b" * 122), (("block_id",), "b" * 123), (("block_id",), ""),
    (("block_id",), "a b"), (("block_id",), "é"), (("block_id",), "q1\n"), (("block_id",), 7),
    (("task",), "t" * 128), (("task",), "t" * 129), (("client_id",), ""),
    (("client_id",), "c" * 128), (("client_id",), "c" * 129), (("client_id",), 'a"b'),
    (("client_id",), "a\\b"), (("client_id",), "é"), (("client_id",), None),
    (("quorum",), 0), (("quorum",), 65_536), (("quorum",), 65_537), (("quorum",), True),
    (("quorum",), 1.0), (("quorum",), "2"), (("strategy",), ""), (("strategy",), "s" * 64),
    (("strategy",), "s" * 65), (("strategy",), 'x"'), (("strategy",), 3),
    (("input_scale",), 0.0625), (("input_scale",), 0.0), (("input_scale",), -1.0),
    (("input_scale",), 1), (("input_scale",), 2.5e-300), (("input_scale",), 1e300),
    (("input_scale",), True), (("input_scale",), "0.5"), (("schema_version",), 2),
    (("schema_version",), True), (("schema_version",), 1.0), (("query_ids",), []),
    (("created_at_ms", "offset"), 64), (("created_at_ms", "offset"), 1),
    (("deadline_ms", "offset"), 0), (("input", "offset"), 192), (("input", "offset"), 64),
    (("input", "offset"), 2**40), (("deadline_ms", "shape"), [_N + 1]),
    (("created_at_ms", "shape"), [_N, 1]), (("input", "shape"), [_N]),
    (("input", "shape"), [_N, 3, 0]), (("input", "shape"), [_N, 2**40]),
    (("input", "dtype"), "<f8"), (("created_at_ms", "dtype"), "<f4"),
    (("deadline_ms", "extra"), 1),
]
_DROPS = ["block_id", "client_id", "quorum", "strategy", "input_scale", "schema_version",
          "input"]


@st.composite
def _near_usual(draw: st.DrawFn) -> bytes:
    """A query block record like encode_query_block's, some header values, keys, the
    layout or the frame changed (valid or not)."""
    from schemas.blocks.frame import layout, pack

    dtype = draw(st.sampled_from(["<f4", "<f2", "|u1"]))
    row = draw(st.sampled_from([(3,), (2, 2), ()]))
    arrays = {"created_at_ms": np.arange(_N, dtype="<i8"),
              "deadline_ms": np.arange(_N, dtype="<i8") + 5,
              "input": np.ones((_N, *row), dtype)}
    refs, end = layout(arrays)
    header: dict[str, object] = {
        "schema_version": 1, "block_id": "b", "task": "t", "client_id": "anonymous",
        "quorum": 1, "strategy": None, "input_scale": 0.0625 if dtype == "|u1" else None,
        **{k: dict(v) for k, v in refs.items()}}
    for path, value in draw(st.lists(st.sampled_from(_CHANGES), max_size=2)):
        where = header
        for key in path[:-1]:
            where = where[key]  # type: ignore[assignment]
        where[path[-1]] = value
    for key in draw(st.lists(st.sampled_from(_DROPS), max_size=1)):
        header.pop(key, None)
    options = draw(st.sampled_from([0, 0, 0, orjson.OPT_INDENT_2, orjson.OPT_SORT_KEYS]))
    raw = bytes(pack(1, orjson.dumps(header, option=options), arrays, refs, end))
    tail = draw(st.sampled_from(["", "", "", "", "pad", "cut"]))
    return raw + b"\0" * 64 if tail == "pad" else raw[:-1] if tail == "cut" else raw


def _outcome(decode: Callable[[bytes], object], raw: bytes) -> object:
    try:
        return decode(raw)
    except DecodeError as exc:
        return str(exc)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(_near_usual())
def test_the_fast_query_decode_is_exactly_as_strict(raw: bytes) -> None:
    """query_block_parts (fi_stream.engine's decode) takes the usual record without the
    pydantic model: it must accept exactly what the model and the generic frame accept,
    with the same values, and refuse the rest with their words."""
    from schemas.blocks.codec import _fast_parts, generic_parts, query_block_parts

    reference = _outcome(generic_parts, raw)
    fast = _fast_parts(raw)
    assert fast is None or fast == reference
    assert _outcome(query_block_parts, raw) == reference


@given(query_blocks())
def test_what_encode_writes_takes_the_fast_decode(block: object) -> None:
    from schemas.blocks.codec import _fast_parts, generic_parts

    raw = encode_query_block(block)  # type: ignore[arg-type]
    assert _fast_parts(raw) == generic_parts(raw)
    assert _fast_parts(raw) is not None
