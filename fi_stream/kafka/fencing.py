"""Fencing a consumer-group member that lost its partitions (KIP-447), which aiokafka 0.14
does not do on its own.

Why it matters: a member paused past its session timeout (a long GC, a stalled VM) is
dropped from the group and its partitions go to another member. When it wakes up it still
holds work for those partitions. Its transactional id is its own, so the new owner's does
not fence it; with the TxnOffsetCommit v0 aiokafka sends, the broker checks no group
generation either, and the zombie's transaction commits results the new owner also emits.

Two protocol pieces close that gap:

1. TxnOffsetCommit v3 carries the member's generation and member id. The group coordinator
   rejects a stale one, and the transaction holding the zombie's results aborts
   (`GroupFenced`).
2. OffsetFetch v7 with `require_stable`: a new owner waits for a pending transactional
   offset commit to resolve, instead of reading the offsets from before it and redoing
   what that transaction is about to commit.

The same producer also aborts for real after an abortable error, which aiokafka's own
transaction manager does not (`_AbortingTransactionManager`).

Both pieces need Kafka >= 2.5. The hooks touch aiokafka internals (the consumer's
coordinator, the producer's sender and transaction manager); `pyproject.toml` pins
aiokafka to the minor version they were checked against, and the fault test
`test_a_paused_member_that_wakes_up_late_duplicates_nothing` fails without them.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import CoordinationType
from aiokafka.errors import KafkaError, for_code
from aiokafka.producer.sender import Sender, TxnOffsetCommitHandler
from aiokafka.producer.transaction_manager import TransactionManager, TransactionState
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)
from aiokafka.structs import OffsetAndMetadata

#: Error codes that mean "this member's view of the group is stale".
ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID = 22, 25, 82
_FENCING_CODES = frozenset({ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID})
#: A transaction's offsets for the partition are pending: ask again.
UNSTABLE_OFFSET_COMMIT = 88
#: The coordinator is moving or loading: find it again and ask again.
_COORDINATOR_RETRY_CODES = frozenset({14, 15, 16})


class GroupFenced(KafkaError):  # type: ignore[misc]
    """The group moved on past this member's generation: its transaction was aborted."""

    retriable = False


@dataclass(frozen=True, slots=True)
class GroupMembership:
    """What a transactional offset commit must prove: who the member is, and when."""

    group_id: str
    generation_id: int
    member_id: str


def membership(consumer: AIOKafkaConsumer) -> GroupMembership | None:
    """The consumer's current membership, or None while it is not a member (before its first
    join, or after the coordinator forgot it: then whatever it holds is lost)."""
    coordinator = consumer._coordinator
    if coordinator is None or coordinator.generation < 0 or not coordinator.member_id:
        return None
    return GroupMembership(coordinator.group_id, coordinator.generation, coordinator.member_id)


class _GroupRef(str):
    """The group id as aiokafka's transaction manager carries it, plus the membership."""

    membership: GroupMembership

    def __new__(cls, member: GroupMembership) -> _GroupRef:
        ref = super().__new__(cls, member.group_id)
        ref.membership = member
        return ref


async def send_offsets_fenced(producer: AIOKafkaProducer,
                              offsets: dict[TopicPartition, OffsetAndMetadata],
                              member: GroupMembership) -> None:
    """`send_offsets_to_transaction` that the coordinator checks against `member`'s
    generation; raises `GroupFenced` (inside the transaction, so it aborts) when stale.
    The producer must have gone through `enable_group_fencing`."""
    await producer.send_offsets_to_transaction(offsets, _GroupRef(member))


def enable_group_fencing(producer: AIOKafkaProducer) -> None:
    """Make the transactional producer send TxnOffsetCommit v3 for offsets given by
    `send_offsets_fenced`, and abort for real after any abortable error."""
    if type(producer._sender) is not Sender or type(producer._txn_manager) is not \
            TransactionManager:
        raise TypeError("not an aiokafka 0.14 transactional producer")
    producer._sender.__class__ = _FencingSender
    producer._txn_manager.__class__ = _AbortingTransactionManager


# -- TxnOffsetCommit v3 ------------------------------------------------------------------


class TxnOffsetCommitResponse_v3(Response):  # type: ignore[misc]
    API_KEY = 28
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("topics", CompactArray(
            ("name", CompactString("utf-8")),
            ("partitions", CompactArray(
                ("partition_index", Int32),
                ("error_code", Int16),
                ("tags", TaggedFields),
            )),
            ("tags", TaggedFields),
        )),
        ("tags", TaggedFields),
    )


class TxnOffsetCommitRequest_v3(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 28
    API_VERSION = 3
    RESPONSE_TYPE = TxnOffsetCommitResponse_v3
    SCHEMA = Schema(
        ("transactional_id", CompactString("utf-8")),
        ("group_id", CompactString("utf-8")),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("generation_id", Int32),
        ("member_id", CompactString("utf-8")),
        ("group_instance_id", CompactString("utf-8")),
        ("topics", CompactArray(
            ("name", CompactString("utf-8")),
            ("partitions", CompactArray(
                ("partition_index", Int32),
                ("committed_offset", Int64),
                ("committed_leader_epoch", Int32),
                ("committed_metadata", CompactString("utf-8")),
                ("tags", TaggedFields),
            )),
            ("tags", TaggedFields),
        )),
        ("tags", TaggedFields),
    )


class _TxnOffsetCommitV3(Request[TxnOffsetCommitRequest_v3]):  # type: ignore[misc]
    API_KEY = 28

    def __init__(self, fields: tuple[Any, ...]) -> None:
        self._fields = fields

    def build(self, request_struct_class: type[TxnOffsetCommitRequest_v3]
              ) -> TxnOffsetCommitRequest_v3:
        return request_struct_class(*self._fields)


@dataclass(frozen=True, slots=True)
class _V0ShapedResponse:
    """The v3 answer in the shape aiokafka's v0 handler reads."""

    errors: list[tuple[str, list[tuple[int, int]]]]


class _FencingTxnOffsetCommitHandler(TxnOffsetCommitHandler):  # type: ignore[misc]
    def create_request(self) -> Any:
        group = self._group_id
        if not isinstance(group, _GroupRef):
            return super().create_request()
        txn = self._sender._txn_manager
        topics: dict[str, list[tuple[int, int, int, str, dict[int, bytes]]]] = defaultdict(list)
        for tp, offset in sorted(self._offsets.items()):
            topics[tp.topic].append((tp.partition, offset.offset, -1, offset.metadata, {}))
        member = group.membership
        return _TxnOffsetCommitV3((
            txn.transactional_id, member.group_id, txn.producer_id, txn.producer_epoch,
            member.generation_id, member.member_id, None,
            [(name, parts, {}) for name, parts in topics.items()], {},
        ))

    def handle_response(self, resp: Any) -> float | None:
        if not isinstance(resp, TxnOffsetCommitResponse_v3):
            return super().handle_response(resp)  # type: ignore[no-any-return]
        errors = [(name, [(p, code) for p, code, _ in parts]) for name, parts, _ in resp.topics]
        codes = {code for _, parts in errors for _, code in parts}
        if codes & _FENCING_CODES:
            member = self._group_id.membership
            self._sender._txn_manager.error_transaction(GroupFenced(
                f"group {member.group_id} is past generation {member.generation_id} of member "
                f"{member.member_id} ({for_code(min(codes & _FENCING_CODES)).__name__}): "
                "its partitions belong to another member"))
            return None
        return super().handle_response(_V0ShapedResponse(errors))  # type: ignore[no-any-return]


class _AbortingTransactionManager(TransactionManager):  # type: ignore[misc]
    def error_transaction(self, exc: BaseException) -> None:
        """The abortable-error state, like aiokafka's, but keeping the partitions already
        added to the transaction (as Kafka's Java client does).

        aiokafka's forgets them, so the abort that follows looks empty and sends no EndTxn:
        the transaction stays open on the broker and the producer's *next* transaction,
        same producer id and epoch, commits the records this one was to abort (seen with
        the zombie fault test). This holds for every abortable error, not only fencing.
        """
        self._transition_to(TransactionState.ABORTABLE_ERROR)
        self._pending_txn_partitions.clear()
        for _, _, fut in self._pending_txn_offsets:
            fut.set_exception(exc)
        self._pending_txn_offsets.clear()
        self._transaction_waiter.set_exception(exc)
        self._transaction_waiter.exception()  # the abort replaces this waiter: mark it read


class _FencingSender(Sender):  # type: ignore[misc]
    async def _do_txn_offset_commit(self, offsets: Any, group_id: str) -> None:
        if not isinstance(group_id, _GroupRef):
            await super()._do_txn_offset_commit(offsets, group_id)
            return
        if not offsets:
            return
        node_id = await self._find_coordinator(CoordinationType.GROUP, group_id)
        await _FencingTxnOffsetCommitHandler(self, offsets, group_id).do(node_id)


# -- OffsetFetch v7 (require_stable) --------------------------------------------------------


class OffsetFetchResponse_v7(Response):  # type: ignore[misc]
    API_KEY = 9
    API_VERSION = 7
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("topics", CompactArray(
            ("name", CompactString("utf-8")),
            ("partitions", CompactArray(
                ("partition_index", Int32),
                ("committed_offset", Int64),
                ("committed_leader_epoch", Int32),
                ("metadata", CompactString("utf-8")),
                ("error_code", Int16),
                ("tags", TaggedFields),
            )),
            ("tags", TaggedFields),
        )),
        ("error_code", Int16),
        ("tags", TaggedFields),
    )


class OffsetFetchRequest_v7(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 9
    API_VERSION = 7
    RESPONSE_TYPE = OffsetFetchResponse_v7
    SCHEMA = Schema(
        ("group_id", CompactString("utf-8")),
        ("topics", CompactArray(
            ("name", CompactString("utf-8")),
            ("partition_indexes", CompactArray(Int32)),
            ("tags", TaggedFields),
        )),
        ("require_stable", Boolean),
        ("tags", TaggedFields),
    )


class _StableOffsetFetch(Request[OffsetFetchRequest_v7]):  # type: ignore[misc]
    API_KEY = 9

    def __init__(self, group_id: str, topics: dict[str, list[int]]) -> None:
        self._group_id = group_id
        self._topics = topics

    def build(self, request_struct_class: type[OffsetFetchRequest_v7]) -> OffsetFetchRequest_v7:
        topics: list[tuple[str, list[int], dict[int, bytes]]] = [
            (name, parts, {}) for name, parts in sorted(self._topics.items())]
        return request_struct_class(self._group_id, topics, True, {})


async def fetch_stable_offsets(admin: AIOKafkaAdminClient, group_id: str,
                               partitions: list[TopicPartition], *, timeout_s: float
                               ) -> dict[TopicPartition, OffsetAndMetadata | None]:
    """Committed offsets (None: none yet) once no transaction has offsets for them pending.

    A pending commit resolves when its transaction ends, or when the broker aborts it after
    the transaction timeout: `timeout_s` should exceed that.
    """
    topics: dict[str, list[int]] = defaultdict(list)
    for tp in partitions:
        topics[tp.topic].append(tp.partition)
    deadline = time.monotonic() + timeout_s
    while True:
        node = await admin.find_coordinator(group_id)
        resp = await admin._send_request(_StableOffsetFetch(group_id, topics), node)
        codes = {resp.error_code} | {p[4] for _, parts, _ in resp.topics for p in parts}
        codes.discard(0)
        if not codes:
            return {TopicPartition(name, p[0]): (OffsetAndMetadata(p[1], p[3] or "")
                                                 if p[1] >= 0 else None)
                    for name, parts, _ in resp.topics for p in parts}
        if not codes <= {UNSTABLE_OFFSET_COMMIT} | _COORDINATOR_RETRY_CODES:
            raise for_code(max(codes))(f"offset fetch for group {group_id}")
        if time.monotonic() > deadline:
            raise KafkaError(f"offsets of group {group_id} still unstable after {timeout_s} s")
        await asyncio.sleep(0.05)
