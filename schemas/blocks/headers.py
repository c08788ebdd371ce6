"""The JSON headers of the three blocks (docs/wire-format.md), as frozen pydantic models.

A header is validated by pydantic-core in one call (`validate_json`, Rust), so a block of N
queries costs O(1) Python operations to check however large N is: the per-query ids and
times are JSON arrays parsed and checked in C/Rust, the tensors are raw buffers described by
a `TensorRef` and viewed with numpy without a copy.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.events import SCHEMA_VERSION, Privacy, WindowRef
from schemas.tensor import DType

#: Every buffer starts at a multiple of this many bytes from the start of the data section
#: (itself at such a multiple from the record's start): numpy and torch views are aligned
#: for any dtype, and a device copy starts on a cache line.
ALIGN = 64
#: Most queries one block may carry (a 32 MiB record of [N, 64] float32 is ~130k rows).
MAX_BLOCK = 65_536
#: Most dimensions of one tensor.
MAX_RANK = 8

BlockId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")]
#: A query block's id: short enough that every derived query id `f"{block_id}.{row}"`
#: (row < MAX_BLOCK: at most 5 digits) is a valid event id (≤ 128 characters).
QueryBlockId = Annotated[str, Field(min_length=1, max_length=122,
                                        pattern=r"^[A-Za-z0-9_.:\-]+$")]
Millis = Annotated[int, Field(ge=0, lt=2**63)]

#: Row status codes of a response block's `status` buffer (|u1): 0 answered, else declined.
DECLINE_CODES: tuple[str, ...] = ("answered", "budget_exhausted", "expired", "bad_input",
                                  "unsupported_task", "quota_exhausted")
#: Row status codes of a result block's `status` buffer (|u1).
RESULT_CODES: tuple[str, ...] = ("complete", "partial", "insufficient", "rejected")
#: Cell codes of a result block's `roles` buffer [N, P] (|u1): what participant p did for
#: query n. 10+k: declined for DECLINE_CODES[k]; 20+k: excluded for EXCLUSION_CODES[k].
#: 4: the participant is not named in that query's Result at all (another query of the block
#: named it).
ROLE_CODES: dict[int, str] = {0: "missing", 1: "included", 2: "late", 3: "copied",
                              4: "unlisted"}
EXCLUSION_CODES: tuple[str, ...] = ("non_finite", "wrong_width", "implausible_norm",
                                    "privacy_mismatch")
DECLINED_BASE = 10
EXCLUDED_BASE = 20


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TensorRef(_Frozen):
    """Where one raw little-endian buffer lies in the data section, and what it holds."""

    dtype: DType
    shape: tuple[Annotated[int, Field(ge=0, lt=2**40)], ...] = Field(max_length=MAX_RANK)
    #: Bytes from the start of the data section; a multiple of ALIGN.
    offset: int = Field(ge=0, lt=2**40, multiple_of=ALIGN)


class BlockHeader(_Frozen):
    """Base of the three headers: the schema name and its version."""

    SCHEMA: ClassVar[str] = ""
    KIND: ClassVar[int] = 0
    schema_version: Literal[1] = SCHEMA_VERSION  # type: ignore[assignment]

    #: The fields that describe buffers.
    BUFFERS: ClassVar[tuple[str, ...]] = ()

    def tensors(self) -> dict[str, TensorRef]:
        """Every buffer of the block by field name (None fields left out)."""
        found = {name: getattr(self, name) for name in self.BUFFERS}
        return {name: ref for name, ref in found.items() if ref is not None}


def _rows(ref: TensorRef, n: int, what: str, rank: int | None = None,
          dtypes: tuple[str, ...] | None = None) -> None:
    if not ref.shape or ref.shape[0] != n:
        raise ValueError(f"{what} must have {n} rows, one per query; got shape {ref.shape}")
    if rank is not None and len(ref.shape) != rank:
        raise ValueError(f"{what} must have rank {rank}; got shape {ref.shape}")
    if dtypes is not None and ref.dtype not in dtypes:
        raise ValueError(f"{what} must be one of {', '.join(dtypes)}; got {ref.dtype}")


def _count(ref: TensorRef, what: str) -> int:
    """N, the rows of a block, from its first buffer: 1..MAX_BLOCK."""
    n = ref.shape[0] if ref.shape else 0
    if not 1 <= n <= MAX_BLOCK:
        raise ValueError(f"{what} must have 1..{MAX_BLOCK} rows; got shape {ref.shape}")
    return n


def query_id(block_id: str, row: int) -> str:
    """The id of row `row` of query block `block_id`: derived, never listed on the wire."""
    return f"{block_id}.{row}"


def split_query_id(qid: str) -> tuple[str, int]:
    """(block id, row) of a derived query id; ValueError when `qid` is not of that form
    (the row is the canonical decimal after the last "." and the block id is not empty)."""
    block_id, dot, row = qid.rpartition(".")
    if not dot or not block_id or not row.isascii() or not row.isdigit() or (
            len(row) > 1 and row[0] == "0"):
        raise ValueError(f"{qid!r} is not a block query id (block_id.row)")
    return block_id, int(row)


class QueryBlockHeader(BlockHeader):
    """N ≥ 1 queries of one task from one client; row n of `input` is query
    `query_id(block_id, n)`'s. N is the buffers' first dimension (no per-row id list)."""

    SCHEMA: ClassVar[str] = "fi.query_block"
    KIND: ClassVar[int] = 1
    BUFFERS: ClassVar[tuple[str, ...]] = ("created_at_ms", "deadline_ms", "input")
    block_id: QueryBlockId
    task: BlockId
    client_id: str = Field(default="anonymous", min_length=1, max_length=128)
    quorum: int = Field(default=1, ge=1, le=MAX_BLOCK)
    strategy: str | None = Field(default=None, max_length=64)
    #: <i8 [N] buffers: epoch milliseconds (binary: 1024 JSON integers cost ~50 µs to check).
    created_at_ms: TensorRef
    deadline_ms: TensorRef
    input: TensorRef
    #: Integer inputs (|u1) mean raw × input_scale (digits: counts 0..16, scale 1/16).
    input_scale: float | None = Field(default=None, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _per_query(self) -> QueryBlockHeader:
        n = _count(self.created_at_ms, "created_at_ms")
        _rows(self.created_at_ms, n, "created_at_ms", 1, ("<i8",))
        _rows(self.deadline_ms, n, "deadline_ms", 1, ("<i8",))
        _rows(self.input, n, "input", dtypes=("<f4", "<f2", "|u1"))
        if self.input_scale is not None and self.input.dtype != "|u1":
            raise ValueError("input_scale applies to |u1 inputs only")
        return self


class RowDetail(_Frozen):
    """What exactly is wrong with one declined row (a decline's optional `detail`)."""

    row: int = Field(ge=0, lt=MAX_BLOCK)
    detail: str = Field(max_length=500)


class Span(_Frozen):
    """`rows` consecutive record rows answering rows 0..rows-1 of query block `block_id`."""

    block_id: QueryBlockId
    rows: int = Field(ge=1, le=MAX_BLOCK)


class ResponseBlockHeader(BlockHeader):
    """One participant's answers to every row of one or more query blocks of one query
    partition (one micro-batch): the spans in record order, record row r answers the row
    of the span covering r, either with outputs[r] (status 0) or with a decline (status
    DECLINE_CODES[k], outputs[r] all zero). Signed: the record ends with a 64-byte Ed25519
    signature over every byte before it."""

    SCHEMA: ClassVar[str] = "fi.response_block"
    KIND: ClassVar[int] = 2
    BUFFERS: ClassVar[tuple[str, ...]] = ("outputs", "status")
    participant_id: BlockId
    batch_id: BlockId
    task: BlockId
    model_version: str = Field(max_length=128)
    privacy: Privacy
    produced_at_ms: Millis
    query_partition: int = Field(ge=0, lt=2**31)
    #: The query blocks answered, in record order; ΣN = rows ≤ MAX_BLOCK.
    blocks: list[Span] = Field(min_length=1, max_length=MAX_BLOCK)
    #: Record rows (not block rows) of some declined rows, with why.
    details: list[RowDetail] = Field(default_factory=list, max_length=MAX_BLOCK)
    outputs: TensorRef
    status: TensorRef

    @model_validator(mode="after")
    def _per_query(self) -> ResponseBlockHeader:
        n = sum(s.rows for s in self.blocks)
        if n > MAX_BLOCK:
            raise ValueError(f"a record answers at most {MAX_BLOCK} rows; got {n}")
        if len({s.block_id for s in self.blocks}) != len(self.blocks):
            raise ValueError("blocks repeats a block id")
        _rows(self.outputs, n, "outputs", rank=2, dtypes=("<f4",))
        _rows(self.status, n, "status", rank=1, dtypes=("|u1",))
        rows = [d.row for d in self.details]
        if rows != sorted(set(rows)) or (rows and rows[-1] >= n):
            raise ValueError(f"details must name distinct rows below {n}, in order")
        return self


class ResponseRef(_Frozen):
    """Where a response record some answer of the block came from lies in fi.responses."""

    partition: int = Field(ge=0, lt=2**31)
    offset: int = Field(ge=0, lt=2**63)


class RowText(_Frozen):
    row: int = Field(ge=0, lt=MAX_BLOCK)
    text: str = Field(max_length=1000)


class RowCopy(_Frozen):
    """Participant `participant`'s answer to result row `row` was left out as a copy of
    participant `copy_of`'s (indices into `participants`); in the Result's order."""

    row: int = Field(ge=0, lt=MAX_BLOCK)
    participant: int = Field(ge=0, lt=MAX_BLOCK)
    copy_of: int = Field(ge=0, lt=MAX_BLOCK)


class ResultBlockHeader(BlockHeader):
    """The results of N rows of one query block (all of them, or those settled together):
    result row n is query `query_id(block_id, rows[n])`."""

    SCHEMA: ClassVar[str] = "fi.result_block"
    KIND: ClassVar[int] = 3
    BUFFERS: ClassVar[tuple[str, ...]] = (
        "rows", "status", "aggregate", "prediction", "confidence", "roles", "response",
        "index", "created_at_ms", "deadline_ms", "completed_at_ms", "weights")
    block_id: QueryBlockId
    task: BlockId
    strategy: str = Field(max_length=64)
    quorum: int = Field(ge=1, le=MAX_BLOCK)
    window: WindowRef
    #: Participants named by any row, sorted: the columns of the [N, P] buffers.
    participants: list[BlockId] = Field(max_length=MAX_BLOCK)
    #: The distinct response records the answers came from (`response` indexes them).
    responses: list[ResponseRef] = Field(default_factory=list, max_length=MAX_BLOCK)
    #: A row's Result.reason (why `rejected`, or an unserved `insufficient`).
    reasons: list[RowText] = Field(default_factory=list, max_length=MAX_BLOCK)
    copies: list[RowCopy] = Field(default_factory=list, max_length=MAX_BLOCK)
    rows: TensorRef
    status: TensorRef
    aggregate: TensorRef
    prediction: TensorRef
    confidence: TensorRef
    roles: TensorRef
    response: TensorRef
    index: TensorRef
    weights: TensorRef | None = None
    created_at_ms: TensorRef
    deadline_ms: TensorRef
    completed_at_ms: TensorRef

    @model_validator(mode="after")
    def _per_query(self) -> ResultBlockHeader:
        n, p = _count(self.rows, "rows"), len(self.participants)
        if self.participants != sorted(set(self.participants)):
            raise ValueError("participants must be distinct and sorted")
        for name, rank, dtypes in _RESULT_BUFFERS:
            _rows(getattr(self, name), n, name, rank, dtypes)
        for name in ("roles", "response", "index"):
            if getattr(self, name).shape[1] != p:
                raise ValueError(f"{name} must be [{n}, {p}], one column per participant")
        if self.weights is not None and (self.weights.shape, self.weights.dtype) != (
                (n, p), "<f8"):
            raise ValueError(f"weights must be <f8 [{n}, {p}]")
        if any(c.participant >= p or c.copy_of >= p or c.row >= n for c in self.copies):
            raise ValueError(f"copies must name participants below {p} and rows below {n}")
        reasons = [r.row for r in self.reasons]
        if reasons != sorted(set(reasons)) or (reasons and reasons[-1] >= n):
            raise ValueError(f"reasons must name distinct rows below {n}, in order")
        return self


_RESULT_BUFFERS: tuple[tuple[str, int, tuple[str, ...]], ...] = (
    ("rows", 1, ("<i4",)), ("status", 1, ("|u1",)), ("aggregate", 2, ("<f8",)),
    ("prediction", 1, ("<i8",)), ("confidence", 1, ("<f8",)), ("roles", 2, ("|u1",)),
    ("response", 2, ("<i4",)), ("index", 2, ("<i4",)), ("created_at_ms", 1, ("<i8",)),
    ("deadline_ms", 1, ("<i8",)), ("completed_at_ms", 1, ("<i8",)))


ALL_BLOCK_HEADERS: tuple[type[BlockHeader], ...] = (
    QueryBlockHeader, ResponseBlockHeader, ResultBlockHeader)
