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
_QUERY_FIELDS = frozenset(Query.model_fields)

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
        if (type(obj) is dict and _count(obj, "schema_version", SCHEMA_VERSION, SCHEMA_VERSION)
                and obj.get("schema_version", SCHEMA_VERSION) == SCHEMA_VERSION
                and len(obj) <= 10):
            qid, task, deadline, created, tensor = (obj["query_id"], obj["task"],
                                                    obj["deadline_ms"], obj["created_at_ms"],
                                                    obj["input"])
            dtype, shape = tensor["dtype"], tensor["shape"]
            data = base64.b64decode(tensor["data"], validate=True)
            strategy, client = obj.get("strategy"), obj.get("client_id", "anonymous")
            if (type(qid) is str and type(task) is str and _count(obj, "deadline_ms", 0, None)
                    and _count(obj, "created_at_ms", 0, None) and _count(obj, "quorum", 1, 1)
                    and (strategy is None or type(strategy) is str) and type(client) is str
                    and 0 < len(qid) <= 128 and 0 < len(task) <= 128 and type(shape) is list
                    and all(type(d) is int and d >= 0 for d in shape)
                    and dtype in ITEMSIZE and len(data) <= MAX_TENSOR_BYTES
                    and len(data) == math.prod(shape) * ITEMSIZE[dtype]
                    and _ID.fullmatch(qid) and _ID.fullmatch(task)
                    and obj.keys() <= _QUERY_FIELDS and len(tensor) == 3):
                return QueryView(qid, task, deadline, dtype, tuple(shape), data, created,
                                 strategy, client)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, binascii.Error):
        pass
    query = decode(raw, Query)  # raises the precise DecodeError, or accepts an odd-but-valid one
    t = query.input
    return QueryView(query.query_id, query.task, query.deadline_ms, t.dtype, t.shape, t.data,
                     query.created_at_ms, query.strategy, query.client_id)


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
