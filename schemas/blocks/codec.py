"""Query and response blocks: plain values with numpy arrays, and their symmetric
encode/decode pairs. Decoding is O(1) Python operations per block: one header validation
(pydantic-core, Rust) and one numpy view per buffer, never a loop over the queries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from schemas.blocks.frame import SIGNATURE_SIZE, Array, layout, pack, unpack
from schemas.blocks.headers import (
    DECLINE_CODES,
    QueryBlockHeader,
    ResponseBlockHeader,
    query_id,
)
from schemas.codec import DecodeError
from schemas.events import Privacy


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
    header, views, _ = unpack(raw, QueryBlockHeader)
    return QueryBlock(header.block_id, header.task, views["created_at_ms"],
                      views["deadline_ms"], views["input"], header.input_scale, header.quorum,
                      header.strategy, header.client_id)


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
