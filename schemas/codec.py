"""Symmetric encode/decode of events (orjson JSON envelope) and their Kafka headers."""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
import orjson
import pydantic

from schemas.events import SCHEMA_VERSION, Event, Query, ResponseBatch
from schemas.tensor import ITEMSIZE, MAX_TENSOR_BYTES

E = TypeVar("E", bound=Event)

#: Largest record value any consumer accepts before parsing it.
MAX_RECORD_BYTES = 32 * 1024 * 1024

#: The `Id` pattern; used with fullmatch (a `$` would also match before a final newline).
_ID = re.compile(r"[A-Za-z0-9_.:\-]+")
#: The fields `decode_query_view`'s fast path checks by hand, each against its constraint in
#: `Query` / `Tensor`. A record with any other key takes the full path, so a field added to
#: the model is never accepted unchecked; and tests/unit/test_codec_differential.py holds
#: these sets equal to the models' fields, so the addition cannot send every record through
#: the slow path unnoticed either (as a count of keys, `len(obj) <= 10`, once could).
_FAST_QUERY_FIELDS = frozenset({"schema_version", "query_id", "task", "input", "created_at_ms",
                                "deadline_ms", "quorum", "strategy", "client_id"})
_FAST_TENSOR_FIELDS = frozenset({"dtype", "shape", "data"})

DecodeReason = Literal["malformed", "oversized", "unsupported_version", "invalid"]


class DecodeError(ValueError):
    """Bytes that are not a valid event of the expected type; `reason` is a DLQ reason."""

    def __init__(self, reason: DecodeReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: DecodeReason = reason
        self.detail = detail


def encode(event: Event) -> bytes:
    return orjson.dumps(event.model_dump(mode="json"))


def decode(raw: bytes | None, cls: type[E]) -> E:
    """Parse `raw` as `cls`; every failure is a `DecodeError` naming what is wrong."""
    if raw is None:
        raise DecodeError("malformed", "record has no value (tombstone)")
    if len(raw) > MAX_RECORD_BYTES:
        raise DecodeError("oversized", f"{len(raw)} B exceeds {MAX_RECORD_BYTES} B")
    try:
        # Common path: pydantic parses the JSON itself (one Rust call, no Python dict).
        event: E = cls.__pydantic_validator__.validate_json(raw)
    except pydantic.ValidationError:
        pass  # the slow path below names exactly what is wrong
    else:
        if event.schema_version == SCHEMA_VERSION:
            return event
    try:
        obj: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("malformed", f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise DecodeError("malformed", f"expected a JSON object, got {type(obj).__name__}")
    version = obj.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise DecodeError(
            "unsupported_version",
            f"{cls.SCHEMA}/{version} is not understood; this build reads"
            f" {cls.SCHEMA}/{SCHEMA_VERSION}",
        )
    try:
        return cls.model_validate(obj)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise DecodeError(
            "invalid", f"{cls.SCHEMA}: {where}: {first['msg']} ({exc.error_count()} error(s))"
        ) from None


@dataclass(frozen=True, slots=True)
class QueryView:
    """The fields a participant needs from a Query, decoded without building the model."""

    query_id: str
    task: str
    deadline_ms: int
    dtype: str
    shape: tuple[int, ...]
    data: bytes
    created_at_ms: int = 0
    #: The aggregation rule the query names (None: the aggregator's default).
    strategy: str | None = None
    client_id: str = "anonymous"

    def to_numpy(self) -> np.ndarray[Any, Any]:
        return np.frombuffer(self.data, dtype=np.dtype(self.dtype)).reshape(self.shape)


def _count(obj: dict[str, Any], name: str, minimum: int, default: int | None) -> bool:
    """Is `obj[name]` a plain int >= minimum (or absent, when it has a default)?"""
    value = obj.get(name, default)
    return type(value) is int and minimum <= value < 2**63


def decode_query_view(raw: bytes | None) -> QueryView:
    """Fast path for the participant's hot loop: one orjson parse and a few checks.

    It accepts only what `decode(raw, Query)` accepts (every field's constraints are
    checked here, or the record takes the full path): a participant must never answer,
    and spend privacy on, a query the aggregator rejects. Anything unusual falls back to
    the full pydantic `decode`, so a bad record is rejected with exactly the same
    `DecodeError` either way.
    """
    try:
        obj = orjson.loads(raw) if raw is not None and len(raw) <= MAX_RECORD_BYTES else None
        view = _fast_view(obj) if type(obj) is dict else None
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, binascii.Error):
        view = None
    if view is not None:
        return view
    query = decode(raw, Query)  # raises the precise DecodeError, or accepts an odd-but-valid one
    t = query.input
    return QueryView(query.query_id, query.task, query.deadline_ms, t.dtype, t.shape, t.data,
                     query.created_at_ms, query.strategy, query.client_id)


def _fast_view(obj: dict[str, Any]) -> QueryView | None:
    """The view of a parsed record whose every field passes `Query`'s constraints, checked
    by hand; None for anything else (the caller takes the full path). Raises on records
    of the wrong shape (a missing key, a wrong type), which the caller treats as None."""
    if not (obj.keys() <= _FAST_QUERY_FIELDS
            and _count(obj, "schema_version", SCHEMA_VERSION, SCHEMA_VERSION)
            and obj.get("schema_version", SCHEMA_VERSION) == SCHEMA_VERSION):
        return None
    qid, task, deadline, created = (obj["query_id"], obj["task"], obj["deadline_ms"],
                                    obj["created_at_ms"])
    tensor = _fast_tensor(obj["input"])
    strategy, client = obj.get("strategy"), obj.get("client_id", "anonymous")
    if not (tensor is not None and _is_id(qid) and _is_id(task)
            and _count(obj, "deadline_ms", 0, None) and _count(obj, "created_at_ms", 0, None)
            and _count(obj, "quorum", 1, 1)
            and (strategy is None or type(strategy) is str) and type(client) is str):
        return None
    dtype, shape, data = tensor
    return QueryView(qid, task, deadline, dtype, shape, data, created, strategy, client)


def _fast_tensor(tensor: dict[str, Any]) -> tuple[str, tuple[int, ...], bytes] | None:
    """(dtype, shape, data) of a Tensor's JSON form if it passes `Tensor`'s checks."""
    dtype, shape = tensor["dtype"], tensor["shape"]
    data = base64.b64decode(tensor["data"], validate=True)
    if (type(shape) is list and all(type(d) is int and d >= 0 for d in shape)
            and dtype in ITEMSIZE and len(data) <= MAX_TENSOR_BYTES
            and len(data) == math.prod(shape) * ITEMSIZE[dtype]
            and tensor.keys() == _FAST_TENSOR_FIELDS):
        return dtype, tuple(shape), data
    return None


def _is_id(value: object) -> bool:
    """What `schemas.events.Id` accepts: 1 to 128 characters of `_ID`."""
    return (type(value) is str and 0 < len(value) <= 128
            and _ID.fullmatch(value) is not None)


def canonical_bytes(batch: ResponseBatch) -> bytes:
    """The byte form a participant signs: every field but `signature`, keys sorted.

    None-valued fields are left out (only a decline's optional `detail` can be None), so
    adding an optional field never changes the bytes of a batch that does not use it."""
    return orjson.dumps(
        batch.model_dump(mode="json", exclude={"signature"}, exclude_none=True),
        option=orjson.OPT_SORT_KEYS,
    )


def headers(cls: type[Event], traceparent: str | None = None) -> list[tuple[str, bytes]]:
    """Kafka record headers: content type, schema name/version, and W3C trace context."""
    out = [
        ("content-type", b"application/json"),
        ("fi-schema", f"{cls.SCHEMA}/{SCHEMA_VERSION}".encode()),
    ]
    if traceparent:
        out.append(("traceparent", traceparent.encode()))
    return out
