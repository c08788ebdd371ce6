"""Which part of the log to audit: `--from`/`--to` are `Bound`s, a comma list of items,
each either

- a time: epoch milliseconds (`1717000000000`) or ISO 8601 with an offset
  (`2024-06-01T12:00:00+00:00`), applied per partition to the time-ranged topics
  (`TIME_RANGED`); the registry and feedback are always read whole;
- an offset: `topic:partition:offset`, topic by its short name (`queries`, `results`, …)
  or its full name, for that partition only; it wins over a time. `--to` is exclusive.

consumers/auditor.py maps a bound to offsets on the broker."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from fi_stream.audit.log import TOPIC_KINDS, TopicKind
from fi_stream.errors import ConfigError
from fi_stream.settings import TopicNames

#: Topics a time bound applies to; the registry and feedback are always read whole.
TIME_RANGED: frozenset[TopicKind] = frozenset(
    {"queries", "responses", "results", "incentives", "dlq"})

_OFFSET_ITEM = re.compile(r"^(?P<topic>.+):(?P<partition>\d+):(?P<offset>\d+)$")


@dataclass(frozen=True, kw_only=True)
class Bound:
    """One end of the slice: a time (epoch ms) and/or offsets per (topic, partition)."""

    time_ms: int | None = None
    offsets: Mapping[tuple[TopicKind, int], int] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, topics: TopicNames | None = None) -> Bound:
        """`1717000000000`, `2024-06-01T12:00:00+00:00`, `results:0:120,queries:1:7`, …"""
        full = {name: kind for kind, name in (topics or TopicNames()).model_dump().items()}
        time_ms: int | None = None
        offsets: dict[tuple[TopicKind, int], int] = {}
        for item in (i.strip() for i in text.split(",")):
            if not item:
                continue
            m = _OFFSET_ITEM.match(item)
            topic = m["topic"] if m else ""
            kind = topic if topic in TOPIC_KINDS else full.get(topic)
            if m and kind is not None:
                offsets[(topic_kind(kind), int(m["partition"]))] = int(m["offset"])
                continue
            if time_ms is not None:
                raise ConfigError(f"two times in one bound {text!r}: give one")
            time_ms = parse_time(item)
        return cls(time_ms=time_ms, offsets=offsets)


def topic_kind(name: str) -> TopicKind:
    for kind in TOPIC_KINDS:
        if kind == name:
            return kind
    raise ConfigError(f"unknown topic {name!r}; use one of {', '.join(TOPIC_KINDS)}")


def parse_time(item: str) -> int:
    """Epoch ms, or ISO 8601 with a UTC offset, as epoch ms."""
    if item.isdigit():
        return int(item)
    try:
        when = datetime.fromisoformat(item)
    except ValueError:
        raise ConfigError(
            f"{item!r} is neither a time (epoch ms, or ISO 8601 with an offset) nor "
            f"TOPIC:PARTITION:OFFSET with TOPIC one of {', '.join(TOPIC_KINDS)}") from None
    if when.tzinfo is None:
        raise ConfigError(f"{item!r} has no UTC offset: add one (e.g. +00:00) or use epoch ms")
    return int(when.timestamp() * 1000)
