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
Millis = Annotated[int, Field(ge=0, lt=2**63)]

#: Row status codes of a response block's `status` buffer (|u1): 0 answered, else declined.
DECLINE_CODES: tuple[str, ...] = ("answered", "budget_exhausted", "expired", "bad_input",
                                  "unsupported_task", "quota_exhausted")
#: Row status codes of a result block's `status` buffer (|u1).
RESULT_CODES: tuple[str, ...] = ("complete", "partial", "insufficient", "rejected")
#: Cell codes of a result block's `roles` buffer [N, P] (|u1): what participant p did for
#: query n. 10+k: declined for DECLINE_CODES[k]; 20+k: excluded for EXCLUSION_CODES[k].
ROLE_CODES: dict[int, str] = {0: "missing", 1: "included", 2: "late", 3: "copied"}
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


def _unique(ids: list[str], what: str) -> None:
    if len(set(ids)) != len(ids):
        raise ValueError(f"{what} repeats an id")


class QueryBlockHeader(BlockHeader):
    """N ≥ 1 queries of one task from one client; row n of `input` is query_ids[n]'s."""

    SCHEMA: ClassVar[str] = "fi.query_block"
    KIND: ClassVar[int] = 1
    BUFFERS: ClassVar[tuple[str, ...]] = ("created_at_ms", "deadline_ms", "input")
    block_id: BlockId
    task: BlockId
    client_id: str = Field(default="anonymous", min_length=1, max_length=128)
    quorum: int = Field(default=1, ge=1, le=MAX_BLOCK)
    strategy: str | None = Field(default=None, max_length=64)
    query_ids: list[BlockId] = Field(min_length=1, max_length=MAX_BLOCK)
    #: <i8 [N] buffers: epoch milliseconds (binary: 1024 JSON integers cost ~50 µs to check).
    created_at_ms: TensorRef
    deadline_ms: TensorRef
    input: TensorRef
    #: Integer inputs (|u1) mean raw × input_scale (digits: counts 0..16, scale 1/16).
    input_scale: float | None = Field(default=None, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _per_query(self) -> QueryBlockHeader:
        n = len(self.query_ids)
        _unique(self.query_ids, "query_ids")
        _rows(self.created_at_ms, n, "created_at_ms", 1, ("<i8",))
        _rows(self.deadline_ms, n, "deadline_ms", 1, ("<i8",))
        _rows(self.input, n, "input", dtypes=("<f4", "<f2", "|u1"))
        if self.input_scale is not None and self.input.dtype != "|u1":
            raise ValueError("input_scale applies to |u1 inputs only")
        return self


class RowDetail(_Frozen):
    """What exactly is wrong with one declined row (a decline's optional `detail`)."""

    row: int = Field(ge=0, lt=MAX_BLOCK)
    detail: str = Field(min_length=1, max_length=500)


class ResponseBlockHeader(BlockHeader):
    """One participant's answer to one query block: row n answers query_ids[n], either with
    outputs[n] (status 0) or with a decline (status DECLINE_CODES[k], outputs[n] all zero).
    Signed: the record ends with a 64-byte Ed25519 signature over every byte before it."""

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
    query_block_id: BlockId
    query_ids: list[BlockId] = Field(min_length=1, max_length=MAX_BLOCK)
    details: list[RowDetail] = Field(default_factory=list, max_length=MAX_BLOCK)
    outputs: TensorRef
    status: TensorRef

    @model_validator(mode="after")
    def _per_query(self) -> ResponseBlockHeader:
        n = len(self.query_ids)
        _unique(self.query_ids, "query_ids")
        _rows(self.outputs, n, "outputs", rank=2, dtypes=("<f4",))
        _rows(self.status, n, "status", rank=1, dtypes=("|u1",))
        rows = [d.row for d in self.details]
        if rows != sorted(set(rows)) or (rows and rows[-1] >= n):
            raise ValueError(f"details must name distinct rows below {n}, in order")
        return self


class ResponseRef(_Frozen):
    """Where participant `participants[participant]`'s response block lies in fi.responses;
    its row for a query is the query's `rows` entry."""

    participant: int = Field(ge=0, lt=MAX_BLOCK)
    partition: int = Field(ge=0, lt=2**31)
    offset: int = Field(ge=0, lt=2**63)


class RowText(_Frozen):
    row: int = Field(ge=0, lt=MAX_BLOCK)
    text: str = Field(min_length=1, max_length=500)


class RowCopy(_Frozen):
    """Participant `participant`'s answer to query `row` was left out as a copy of
    participant `copy_of`'s (indices into `participants`)."""

    row: int = Field(ge=0, lt=MAX_BLOCK)
    participant: int = Field(ge=0, lt=MAX_BLOCK)
    copy_of: int = Field(ge=0, lt=MAX_BLOCK)


class ResultBlockHeader(BlockHeader):
    """The results of N queries of one query block (all of them, or those due together)."""

    SCHEMA: ClassVar[str] = "fi.result_block"
    KIND: ClassVar[int] = 3
    BUFFERS: ClassVar[tuple[str, ...]] = (
        "rows", "status", "aggregate", "prediction", "confidence", "roles", "created_at_ms",
        "deadline_ms", "completed_at_ms", "weights")
    block_id: BlockId
    task: BlockId
    strategy: str = Field(max_length=64)
    quorum: int = Field(ge=1, le=MAX_BLOCK)
    window: WindowRef
    query_ids: list[BlockId] = Field(min_length=1, max_length=MAX_BLOCK)
    #: Expected participants, sorted: the columns of `roles` and `weights`.
    participants: list[BlockId] = Field(max_length=MAX_BLOCK)
    responses: list[ResponseRef] = Field(default_factory=list, max_length=MAX_BLOCK)
    #: Why a `rejected` (or unserved `insufficient`) row is what it is.
    reasons: list[RowText] = Field(default_factory=list, max_length=MAX_BLOCK)
    copies: list[RowCopy] = Field(default_factory=list, max_length=MAX_BLOCK)
    rows: TensorRef
    status: TensorRef
    aggregate: TensorRef
    prediction: TensorRef
    confidence: TensorRef
    roles: TensorRef
    weights: TensorRef | None = None
    created_at_ms: TensorRef
    deadline_ms: TensorRef
    completed_at_ms: TensorRef

    @model_validator(mode="after")
    def _per_query(self) -> ResultBlockHeader:
        n, p = len(self.query_ids), len(self.participants)
        _unique(self.query_ids, "query_ids")
        if self.participants != sorted(set(self.participants)):
            raise ValueError("participants must be distinct and sorted")
        for name, rank, dtypes in (("rows", 1, ("<i4",)), ("status", 1, ("|u1",)),
                                   ("aggregate", 2, ("<f8",)), ("prediction", 1, ("<i8",)),
                                   ("confidence", 1, ("<f8",)), ("roles", 2, ("|u1",)),
                                   ("created_at_ms", 1, ("<i8",)),
                                   ("deadline_ms", 1, ("<i8",)),
                                   ("completed_at_ms", 1, ("<i8",))):
            _rows(getattr(self, name), n, name, rank, dtypes)
        if self.roles.shape[1] != p:
            raise ValueError(f"roles must be [{n}, {p}], one column per participant")
        if self.weights is not None and (self.weights.shape, self.weights.dtype) != (
                (n, p), "<f8"):
            raise ValueError(f"weights must be <f8 [{n}, {p}]")
        if any(r.participant >= p for r in self.responses) or any(
                c.participant >= p or c.copy_of >= p or c.row >= n for c in self.copies):
            raise ValueError(f"responses and copies must name participants below {p}"
                             f" and rows below {n}")
        if any(r.row >= n for r in self.reasons):
            raise ValueError(f"reasons must name rows below {n}")
        return self


ALL_BLOCK_HEADERS: tuple[type[BlockHeader], ...] = (
    QueryBlockHeader, ResponseBlockHeader, ResultBlockHeader)
