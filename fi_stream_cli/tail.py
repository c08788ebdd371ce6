"""`fi-stream topics tail TOPIC`: a topic's events, decoded with their schema.

Tensors are summarised (dtype, shape, min/mean/max) and keys and signatures cut short, so
one query or batch fits on a screen. A record that does not decode is shown with its
DecodeError, never skipped: tail is a debugging tool. Read-only: no consumer group.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord

from fi_stream.errors import ConfigError
from fi_stream.settings import Settings
from schemas import (
    DecodeError,
    Event,
    Feedback,
    Incentive,
    Participant,
    Query,
    ResponseBatch,
    Result,
    Tensor,
    decode,
)

#: The event type of each topic (fi.dlq holds other topics' records as they were).
EVENT_OF: dict[str, type[Event]] = {
    "queries": Query, "responses": ResponseBatch, "results": Result,
    "incentives": Incentive, "feedback": Feedback, "registry": Participant,
}
#: Strings longer than this (keys, signatures) are cut, with their length.
LONG = 44
#: How much of a dead letter's original value is shown.
DLQ_PREVIEW = 300


def resolve_topic(settings: Settings, name: str) -> tuple[str, type[Event] | None]:
    """The full topic name (with the prefix) and its event type, from a name as the user
    gives it: `results`, `fi.results`, or the prefixed name."""
    full = settings.topic_names.model_dump()
    for role, bare in settings.topics.model_dump().items():
        if name in (role, bare, full[role]):
            return full[role], EVENT_OF.get(role)
    raise ConfigError(f"unknown topic {name!r}; choose one of "
                      f"{', '.join(settings.topics.model_dump().values())}")


def summarise_tensor(value: Mapping[str, Any]) -> str:
    """`<f4 [2, 10] min 0.01 mean 0.1 max 0.93` for a tensor's JSON form."""
    try:
        array = Tensor.model_validate(value).to_numpy()
    except ValueError as exc:
        return f"<tensor that does not decode: {exc}>"
    shape = list(array.shape)
    if array.size == 0 or array.dtype.kind not in "fiu":
        return f"{value['dtype']} {shape}"
    return (f"{value['dtype']} {shape} min {float(array.min()):.4g} "
            f"mean {float(array.mean()):.4g} max {float(array.max()):.4g}")


def summarise(value: Any) -> Any:
    """The JSON form of an event with tensors summarised and long strings cut."""
    if isinstance(value, dict):
        if value.keys() == {"dtype", "shape", "data"}:
            return summarise_tensor(value)
        return {k: summarise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [summarise(v) for v in value]
    if isinstance(value, str) and len(value) > LONG:
        return f"{value[:LONG - 12]}…({len(value)} chars)"
    return value


def _text(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(raw).decode()


def describe(record: ConsumerRecord[bytes, bytes], event_type: type[Event] | None
             ) -> dict[str, Any]:
    """One record as a JSON-ready document: where it is, its key, and its event (or why it
    does not decode; for fi.dlq, the error headers and the start of the original value)."""
    doc: dict[str, Any] = {
        "topic": record.topic, "partition": record.partition, "offset": record.offset,
        "time": dt.datetime.fromtimestamp(record.timestamp / 1000, dt.UTC)
        .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "key": summarise(_text(record.key)),
    }
    if event_type is None:
        doc["headers"] = {k: _text(v) for k, v in record.headers or ()}
        value = _text(record.value) or ""
        doc["value"] = value if len(value) <= DLQ_PREVIEW else value[:DLQ_PREVIEW] + "…"
        return doc
    try:
        event = decode(record.value, event_type)
    except DecodeError as exc:
        doc["error"] = f"{exc.reason}: {exc.detail}"
        return doc
    doc["event"] = summarise(event.model_dump(mode="json", exclude_none=True))
    return doc


def render(doc: Mapping[str, Any]) -> str:
    """A document as indented `name: value` lines under a one-line header."""
    key = f"  key {doc['key']}" if doc.get("key") is not None else ""
    lines = [f"── {doc['topic']} [{doc['partition']}] @{doc['offset']}  {doc['time']}{key}"]
    body = {k: v for k, v in doc.items() if k not in ("topic", "partition", "offset", "time",
                                                      "key", "event")}
    body.update(doc.get("event") or {})
    _lines(body, "  ", lines)
    return "\n".join(lines)


def _lines(value: Mapping[str, Any], indent: str, out: list[str]) -> None:
    for name, v in value.items():
        if isinstance(v, dict) and v:
            out.append(f"{indent}{name}:")
            _lines(v, indent + "  ", out)
        elif isinstance(v, list) and any(isinstance(x, dict) for x in v):
            out.append(f"{indent}{name}: ({len(v)})")
            for x in v:
                out.append(f"{indent}  - {_inline(x)}")
        else:
            out.append(f"{indent}{name}: {_inline(v)}")


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_inline(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


async def tail(consumer: AIOKafkaConsumer, topic: str, *, from_beginning: bool,
               limit: int | None) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """The topic's records from its start (or from now), until `limit` were yielded."""
    from fi_stream.kafka.reading import partitions_of

    tps = await partitions_of(consumer, topic)
    consumer.assign(tps)
    if from_beginning:
        await consumer.seek_to_beginning(*tps)
    else:
        await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)  # resolve the seeks now: later records are shown
    seen = 0
    while limit is None or seen < limit:
        got = await consumer.getmany(timeout_ms=500)
        for records in got.values():
            for record in records:
                yield record
                seen += 1
                if limit is not None and seen >= limit:
                    return

