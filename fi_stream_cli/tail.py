"""`fi-stream topics tail TOPIC`: a topic's events, decoded with their schema.

fi.queries, fi.responses and fi.results carry blocks (schemas.blocks): each record is shown
as its block, one document per record however many queries it carries (its fields, the
derived query ids cut short, every buffer summarised), not as N views. Tensors and buffers
are summarised (dtype, shape, min/mean/max) and keys and signatures cut short, so one
record fits on a screen. A record that does not decode is shown with its DecodeError,
never skipped: tail is a debugging tool. Read-only: no consumer group.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import numpy as np
import orjson
import pydantic
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
from schemas.blocks import (
    DECLINE_CODES,
    RESULT_CODES,
    QueryBlock,
    ResponseBlock,
    ResultBlock,
    decode_query_block,
    decode_response_block,
    decode_result_block,
)

Block = QueryBlock | ResponseBlock | ResultBlock

#: The event type of each topic (fi.dlq holds other topics' records as they were).
EVENT_OF: dict[str, type[Event]] = {
    "queries": Query, "responses": ResponseBatch, "results": Result,
    "incentives": Incentive, "feedback": Feedback, "registry": Participant,
}
#: The topics whose records are blocks: by the view type `resolve_topic` names, the decoder.
BLOCK_OF: dict[type[Event], Callable[[bytes | None], Block]] = {
    Query: decode_query_block, ResponseBatch: decode_response_block, Result: decode_result_block,
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


def summarise_array(array: np.ndarray[Any, Any]) -> str:
    """`<f4 [2, 10] min 0.01 mean 0.1 max 0.93` for a block's buffer (NaN ignored)."""
    shape = list(array.shape)
    if array.size == 0 or array.dtype.kind not in "fiu":
        return f"{array.dtype.str} {shape}"
    x = array.astype(np.float64)
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return f"{array.dtype.str} {shape} no finite value"
    nan = f" ({x.size - finite.size} not finite)" if finite.size < x.size else ""
    return (f"{array.dtype.str} {shape} min {float(finite.min()):.4g} "
            f"mean {float(finite.mean()):.4g} max {float(finite.max()):.4g}{nan}")


def _field(value: Any) -> Any:
    """One block field as plain JSON (buffers summarised, bytes as base64, cut short)."""
    if isinstance(value, str):
        return summarise(value)
    if isinstance(value, np.ndarray):
        return summarise_array(value)
    if isinstance(value, bytes):
        return summarise("base64:" + base64.b64encode(value).decode())
    if isinstance(value, pydantic.BaseModel):
        return summarise(value.model_dump(mode="json", exclude_none=True))
    if isinstance(value, dict):
        return {str(k): _field(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_field(v) for v in value]
    return value


def block_document(block: Block) -> dict[str, Any]:
    """A block as a JSON-ready document: its fields, its query ids (cut short), buffers
    summarised; codes counted by name (statuses of a response or result block)."""
    doc: dict[str, Any] = {"block": type(block).__name__, "queries": len(block)}
    for f in dataclasses.fields(block):
        if f.name != "signed":  # the record's own bytes
            doc[f.name] = _field(getattr(block, f.name))
    ids = block.query_ids
    doc["query_ids"] = _field(ids if len(ids) <= 4 else [*ids[:3], f"… ({len(ids)} ids)"])
    codes = DECLINE_CODES if isinstance(block, ResponseBlock) else RESULT_CODES
    if not isinstance(block, QueryBlock):
        counted = Counter(codes[int(c)] if int(c) < len(codes) else str(int(c))
                          for c in block.status.tolist())
        doc["statuses"] = dict(sorted(counted.items()))
    return doc


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
        block_of = BLOCK_OF.get(event_type)
        if block_of is not None:
            doc["event"] = block_document(block_of(record.value))
            return doc
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

