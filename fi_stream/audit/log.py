"""What the audit reads: every topic's events with their log positions, as the reader
(consumers/auditor.py) decoded them (fi_stream.audit.ingest.add_record: queries and results
as per-query views of their blocks, response blocks as decoded). Plain data; no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, Literal, NamedTuple, TypeVar

from schemas import (
    Client,
    Feedback,
    Incentive,
    Participant,
    Query,
    Result,
)
from schemas.blocks import ResponseBlock

E = TypeVar("E")

TopicKind = Literal["queries", "responses", "results", "incentives", "feedback", "registry",
                    "dlq"]
TOPIC_KINDS: tuple[TopicKind, ...] = ("queries", "responses", "results", "incentives",
                                      "feedback", "registry", "dlq")


class Position(NamedTuple):
    """Where a record lives in its topic."""

    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Logged(Generic[E]):
    """An event (or a response block) and where it lives: partition and offset of its
    topic, broker timestamp. The views of one block's rows share its record's position."""

    event: E
    partition: int
    offset: int
    timestamp_ms: int = 0

    @property
    def position(self) -> Position:
        return Position(self.partition, self.offset)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A fi.dlq record, by its headers (the value is the original bytes, not decoded)."""

    partition: int
    offset: int
    error: str
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    consumer: str | None = None


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A record of an audited topic that is not a valid event (reason as in the DLQ)."""

    topic: TopicKind
    partition: int
    offset: int
    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Tombstone:
    """A registry record without a value (compaction's delete marker)."""

    key: str
    partition: int
    offset: int


@dataclass(kw_only=True)
class AuditLog:
    """What the reader found, per topic, in log order within each partition."""

    queries: list[Logged[Query]] = field(default_factory=list)
    #: Response blocks as decoded (`signed` kept: signatures are checked on the bytes).
    responses: list[Logged[ResponseBlock]] = field(default_factory=list)
    results: list[Logged[Result]] = field(default_factory=list)
    incentives: list[Logged[Incentive]] = field(default_factory=list)
    feedback: list[Logged[Feedback]] = field(default_factory=list)
    registry: list[Logged[Participant]] = field(default_factory=list)
    #: Query clients and tombstones of fi.registry (audited with an operator key).
    clients: list[Logged[Client]] = field(default_factory=list)
    tombstones: list[Tombstone] = field(default_factory=list)
    #: The operator's public key: set, only operator-signed registry entries are trusted.
    operator_pubkey: bytes | None = None
    dlq: list[DeadLetter] = field(default_factory=list)
    undecodable: list[Undecodable] = field(default_factory=list)
    #: Records read per topic (decodable or not).
    records: dict[str, int] = field(default_factory=dict)
    #: True when only a slice of the log was read (--from/--to).
    partial: bool = False
    #: First offset read per fi.responses partition: references below it are out of range.
    response_starts: dict[int, int] = field(default_factory=dict)
    #: Queries whose deadline + grace is before this time must have a result; None: all must.
    horizon_ms: int | None = None

    @property
    def total_records(self) -> int:
        return sum(self.records.values())

    def before_slice(self, partition: int, offset: int) -> bool:
        """Is this fi.responses position before the slice that was read (so its absence
        says nothing)?"""
        return self.partial and offset < self.response_starts.get(partition, 0)
