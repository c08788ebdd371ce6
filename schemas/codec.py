"""Symmetric encode/decode of the JSON events (orjson) and their Kafka headers. Queries,
responses and results travel as blocks instead (schemas/blocks)."""

from __future__ import annotations

from typing import Any, Literal, TypeVar

import orjson
import pydantic

from schemas.events import SCHEMA_VERSION, Event

E = TypeVar("E", bound=Event)

#: Largest record value any consumer accepts before parsing it.
MAX_RECORD_BYTES = 32 * 1024 * 1024

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


def headers(cls: type[Event], traceparent: str | None = None) -> list[tuple[str, bytes]]:
    """Kafka record headers: content type, schema name/version, and W3C trace context."""
    out = [
        ("content-type", b"application/json"),
        ("fi-schema", f"{cls.SCHEMA}/{SCHEMA_VERSION}".encode()),
    ]
    if traceparent:
        out.append(("traceparent", traceparent.encode()))
    return out
