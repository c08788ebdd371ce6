"""Query and response blocks: plain values with numpy arrays, and their symmetric
encode/decode pairs. Decoding is O(1) Python operations per block: one header validation
(pydantic-core, Rust) and one numpy view per buffer, never a loop over the queries."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import orjson

from schemas.blocks.frame import (
    MAGIC,
    PREFIX,
    PREFIX_SIZE,
    SIGNATURE_SIZE,
    Array,
    aligned,
    layout,
    pack,
    unpack,
)
from schemas.blocks.headers import (
    DECLINE_CODES,
    MAX_BLOCK,
    QueryBlockHeader,
    ResponseBlockHeader,
    query_id,
)
from schemas.codec import MAX_RECORD_BYTES, DecodeError
from schemas.events import SCHEMA_VERSION, Privacy


@dataclass(frozen=True, slots=True, eq=False)
class QueryBlock:
    """N ≥ 1 queries of one task: row n of `inputs` is query `query_id(block_id, n)`'s
    input (ids are derived, never listed: `query_ids`).

    `inputs` is as it travels (|u1, <f2 or <f4); `model_inputs()` gives the float32 the
    model takes. A single query is a block of one."""

    block_id: str
    task: str
    created_at_ms: Array
    deadline_ms: Array
    inputs: Array
    input_scale: float | None = None
    quorum: int = 1
    strategy: str | None = None
    client_id: str = "anonymous"

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def query_ids(self) -> list[str]:
        """Row n's query id, `f"{block_id}.{n}"` (derived; one list built per call)."""
        return [query_id(self.block_id, n) for n in range(len(self))]

    def model_inputs(self) -> Array:
        """The inputs as a fresh, writable float32 array (raw × input_scale for |u1).

        One numpy call for the whole block: the model takes it as is, no per-query stack."""
        out = self.inputs.astype(np.float32)  # always a copy: torch may write to it
        if self.input_scale is not None:
            out *= np.float32(self.input_scale)
        return out


def query_block(block_id: str, task: str, inputs: Array, *,
                created_at_ms: int | Array, deadline_ms: int | Array,
                input_scale: float | None = None, quorum: int = 1,
                strategy: str | None = None, client_id: str = "anonymous") -> QueryBlock:
    """A QueryBlock of `inputs` (one row per query) with the per-query times broadcast
    from scalars where given."""
    inputs = np.asarray(inputs)
    n = int(inputs.shape[0]) if inputs.ndim else 0
    return QueryBlock(block_id, task,
                      _per_query(created_at_ms, n), _per_query(deadline_ms, n),
                      inputs, input_scale, quorum, strategy, client_id)


def _per_query(value: int | Array, n: int) -> Array:
    if isinstance(value, int):
        return np.full(n, value, dtype="<i8")
    out = np.asarray(value, dtype="<i8")
    if out.shape != (n,):
        raise ValueError(f"need one time per query ({n}); got shape {out.shape}")
    return out


def encode_query_block(block: QueryBlock) -> bytes:
    """The record of `block` (not validated here: the reader's decode is the check)."""
    inputs = block.inputs
    arrays = {"created_at_ms": np.asarray(block.created_at_ms, dtype="<i8"),
              "deadline_ms": np.asarray(block.deadline_ms, dtype="<i8"),
              "input": inputs.astype(inputs.dtype.newbyteorder("<"), copy=False)}
    refs, end = layout(arrays)
    header: dict[str, Any] = {
        "schema_version": 1, "block_id": block.block_id, "task": block.task,
        "client_id": block.client_id, "quorum": block.quorum, "strategy": block.strategy,
        "input_scale": block.input_scale, **refs,
    }
    return bytes(pack(QueryBlockHeader.KIND, orjson.dumps(header), arrays, refs, end))


def decode_query_block(raw: bytes | None) -> QueryBlock:
    """The block in `raw`; a `DecodeError` naming what is wrong for anything else."""
    return query_block_of(query_block_parts(raw))


class QueryParts(NamedTuple):
    """A decoded query block before any numpy view: its header fields, N (`rows`), the
    input's dtype and row shape, and where each buffer starts in `raw` (byte offsets). A
    micro-batch of blocks of one is screened from these (fi_stream.screening.screen_batch)
    with O(1) numpy calls for the whole batch instead of three views per block."""

    block_id: str
    task: str
    client_id: str
    quorum: int
    strategy: str | None
    input_scale: float | None
    rows: int
    dtype: str
    shape: tuple[int, ...]  # one row's
    raw: bytes
    created_at: int
    deadline_at: int
    input_at: int


def query_block_of(parts: QueryParts) -> QueryBlock:
    """The QueryBlock of `parts`: read-only views of its buffers, no copy."""
    n, raw = parts.rows, parts.raw
    inputs = np.frombuffer(raw, parts.dtype, n * math.prod(parts.shape), parts.input_at)
    return QueryBlock(parts.block_id, parts.task,
                      np.frombuffer(raw, "<i8", n, parts.created_at),
                      np.frombuffer(raw, "<i8", n, parts.deadline_at),
                      inputs.reshape((n, *parts.shape)), parts.input_scale, parts.quorum,
                      parts.strategy, parts.client_id)


def query_block_parts(raw: bytes | None) -> QueryParts:
    """`decode_query_block` without the views: exactly as strict (a `DecodeError` for
    anything it refuses). The usual record (the header as encode_query_block writes it,
    matched by one regular expression; the buffers in field order) costs about a third of
    the pydantic header model on a block of one; anything else, valid or not, goes
    through that model and the generic frame, which name the error."""
    if type(raw) is bytes:
        parts = _fast_parts(raw)
        if parts is not None:
            return parts
    return generic_parts(raw)


def generic_parts(raw: bytes | None) -> QueryParts:
    """query_block_parts through the header model and the generic frame (any record)."""
    header, _, _ = unpack(raw, QueryBlockHeader)
    raw = raw if type(raw) is bytes else bytes(raw)  # type: ignore[arg-type]
    start = aligned(PREFIX_SIZE + PREFIX.unpack_from(raw)[4])
    ref = header.input
    return QueryParts(header.block_id, header.task, header.client_id, header.quorum,
                      header.strategy, header.input_scale, ref.shape[0], ref.dtype,
                      ref.shape[1:], raw, start + header.created_at_ms.offset,
                      start + header.deadline_ms.offset, start + ref.offset)


_TEXT = rb'[\x20\x21\x23-\x5b\x5d-\x7e]'  # printable ASCII but '"' and '\': no escapes
_INT = rb"(?:0|[1-9][0-9]{0,12})"  # JSON's canonical integers (no leading zero)
#: The header as encode_query_block writes it (orjson: these keys in this order, no
#: spaces, no escapes): each group's text is its value as JSON says, no parser needed.
_USUAL_HEADER = re.compile(
    rb'\{"schema_version":1,"block_id":"([A-Za-z0-9_.:\-]{1,122})",'
    rb'"task":"([A-Za-z0-9_.:\-]{1,128})","client_id":"(' + _TEXT + rb'{1,128})",'
    rb'"quorum":([1-9][0-9]{0,4}),"strategy":(?:null|"(' + _TEXT + rb'{0,64})"),'
    rb'"input_scale":(?:null|((?:0|[1-9][0-9]{0,15})(?:\.[0-9]{1,25})?'
    rb'(?:[eE][+-]?[0-9]{1,3})?)),'
    rb'"created_at_ms":\{"dtype":"<i8","shape":\[([1-9][0-9]{0,4})\],"offset":(' + _INT
    + rb')\},"deadline_ms":\{"dtype":"<i8","shape":\[([1-9][0-9]{0,4})\],"offset":(' + _INT
    + rb')\},"input":\{"dtype":"(<f4|<f2|\|u1)","shape":\[([1-9][0-9]{0,4})((?:,' + _INT
    + rb'){0,7})\],"offset":(' + _INT + rb')\}\}').fullmatch
_ITEMSIZE = {b"<f4": 4, b"<f2": 2, b"|u1": 1}
_ROW_SHAPES: dict[bytes, tuple[int, ...]] = {}  # ",8,8" → (8, 8), the few seen


def _fast_parts(raw: bytes) -> QueryParts | None:
    """The parts of the usual query block, or None: then the generic path decides (and
    names the error). It accepts a subset of what QueryBlockHeader and the frame accept,
    with the same values (tests/unit/test_blocks.py checks it against them): the header
    encode_query_block writes, the buffers in field order without overlap, the record
    ending where the input does."""
    found = _usual_header(raw)
    if found is None:
        return None
    match, start = found
    (block_id, task, client, quorum, strategy, scale, n, c_at, d_n, d_at, dtype, i_n, dims,
     i_at) = match.groups()
    rows, at = int(n), (int(c_at), int(d_at), int(i_at))
    shape = _ROW_SHAPES.get(dims) or _row_shape(dims)
    size = _ITEMSIZE[dtype] * rows * math.prod(shape)
    value = None if scale is None else float(scale)
    if not (d_n == n == i_n and rows <= MAX_BLOCK and int(quorum) <= MAX_BLOCK and
            _usual_layout(rows, at, size, len(raw) - start) and
            (value is None or (0 < value < math.inf and dtype == b"|u1"))):
        return None
    return QueryParts(block_id.decode(), task.decode(), client.decode(), int(quorum),
                      None if strategy is None else strategy.decode(), value, rows,
                      dtype.decode(), shape, raw,
                      start + at[0], start + at[1], start + at[2])


def _usual_header(raw: bytes) -> tuple[re.Match[bytes], int] | None:
    """The usual header's match and where the data section starts, or None."""
    if len(raw) > MAX_RECORD_BYTES or len(raw) < PREFIX_SIZE:
        return None
    magic, version, kind, flags, length = PREFIX.unpack_from(raw)
    if magic != MAGIC or version != SCHEMA_VERSION or kind != 1 or flags or \
            PREFIX_SIZE + length > len(raw):
        return None
    match = _USUAL_HEADER(raw, PREFIX_SIZE, PREFIX_SIZE + length)
    return None if match is None else (match, aligned(PREFIX_SIZE + length))


def _usual_layout(rows: int, at: tuple[int, int, int], size: int, data: int) -> bool:
    """created, deadline and input (`size` B, not empty) at these data-section offsets
    (aligned, below 2**40) in this order without overlap, the input ending the `data` B."""
    created, deadline, inputs = at
    return (created + 8 * rows <= deadline and deadline + 8 * rows <= inputs < 2**40 and
            not (created | deadline | inputs) & 63 and size > 0 and inputs + size == data)


def _row_shape(dims: bytes) -> tuple[int, ...]:
    """The dimensions after N (",8,8" → (8, 8)); a dimension ≥ 2**40 gives size 0 (then
    the record is not the usual one)."""
    shape = tuple(int(d) for d in dims[1:].split(b",")) if dims else ()
    if any(d >= 2**40 for d in shape):
        return (0,)
    if len(_ROW_SHAPES) < 64:
        _ROW_SHAPES[dims] = shape
    return shape


@dataclass(frozen=True, slots=True, eq=False)
class ResponseBlock:
    """One participant's answers to every row of one or more query blocks of one query
    partition, row for row: `spans` [(block_id, rows)] in record order, record row r
    answers the row of the span covering it (`span_rows()`).

    `status[r]` is 0 when `outputs[r]` answers, else the index of its decline reason in
    DECLINE_CODES (and `outputs[r]` is zero). `details`: record row → why, for some
    declined rows. `signature` covers every byte of the record before it (`signed`)."""

    participant_id: str
    batch_id: str
    task: str
    model_version: str
    privacy: Privacy
    produced_at_ms: int
    query_partition: int
    spans: list[tuple[str, int]]
    outputs: Array
    status: Array
    details: dict[int, str] = field(default_factory=dict)
    signature: bytes = b""
    #: The bytes the signature covers (set by decode; empty on a block built in memory).
    signed: bytes = b""

    def __len__(self) -> int:
        return int(self.status.shape[0])

    @property
    def query_ids(self) -> list[str]:
        """Record row r's query id, in record order (derived from the spans)."""
        return [query_id(b, n) for b, rows in self.spans for n in range(rows)]

    def span_rows(self) -> list[tuple[str, int, int]]:
        """(block_id, start, stop): the record rows [start, stop) answering block_id."""
        out, start = [], 0
        for block_id, rows in self.spans:
            out.append((block_id, start, start + rows))
            start += rows
        return out

    def answered(self) -> Array:
        """Boolean mask of the answered rows."""
        mask: Array = self.status == 0
        return mask

    def reason(self, row: int) -> str:
        """The decline reason name of record row `row` ("answered" when it is answered)."""
        return DECLINE_CODES[int(self.status[row])]


def encode_response_block(block: ResponseBlock) -> bytes:
    """The record with its signature trailer (`block.signature`, or 64 zero bytes for a
    record still to be signed: fi_stream.block_signing.sign_response_block)."""
    outputs = np.ascontiguousarray(block.outputs, dtype="<f4")
    status = np.ascontiguousarray(block.status, dtype="|u1")
    if sum(rows for _, rows in block.spans) != status.shape[0]:
        raise ValueError("the spans must cover the record's rows exactly")
    refs, end = layout({"outputs": outputs, "status": status})
    header = {
        "schema_version": 1, "participant_id": block.participant_id,
        "batch_id": block.batch_id, "task": block.task, "model_version": block.model_version,
        "privacy": block.privacy.model_dump(exclude_none=True),
        "produced_at_ms": block.produced_at_ms, "query_partition": block.query_partition,
        "blocks": [{"block_id": b, "rows": rows} for b, rows in block.spans],
        "details": [{"row": r, "detail": d} for r, d in sorted(block.details.items())],
        **refs,
    }
    text = orjson.dumps(header)
    _check_rows(outputs, status, block.details)
    out = pack(ResponseBlockHeader.KIND, text, {"outputs": outputs, "status": status}, refs,
               end, SIGNATURE_SIZE)
    if block.signature:
        if len(block.signature) != SIGNATURE_SIZE:
            raise ValueError(f"an Ed25519 signature is {SIGNATURE_SIZE} B")
        out[-SIGNATURE_SIZE:] = block.signature
    return bytes(out)


def decode_response_block(raw: bytes | None) -> ResponseBlock:
    """The block in `raw` (signature not checked here: fi_stream.block_signing)."""
    header, views, end = unpack(raw, ResponseBlockHeader)
    assert raw is not None  # unpack rejects None
    outputs, status = views["outputs"], views["status"]
    details = {d.row: d.detail for d in header.details}
    try:
        _check_rows(outputs, status, details)
    except ValueError as exc:
        raise DecodeError("invalid", f"{ResponseBlockHeader.SCHEMA}: {exc}") from None
    view = memoryview(raw)
    return ResponseBlock(
        header.participant_id, header.batch_id, header.task, header.model_version,
        header.privacy, header.produced_at_ms, header.query_partition,
        [(s.block_id, s.rows) for s in header.blocks], outputs, status, details,
        bytes(view[end:]), bytes(view[:end]))


def _check_rows(outputs: Array, status: Array, details: dict[int, str]) -> None:
    """Status codes are known and declined rows are zero (one canonical form per block)."""
    if status.size and int(status.max()) >= len(DECLINE_CODES):
        raise ValueError(f"status codes are 0..{len(DECLINE_CODES) - 1}")
    declined = status != 0
    if declined.any() and outputs[declined].any():
        raise ValueError("a declined row's outputs must be zero")
    if details and not status[list(details)].all():
        raise ValueError("details may only name declined rows")
