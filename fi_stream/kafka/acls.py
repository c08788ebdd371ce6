"""Kafka ACLs for a federation: who may read and write which topic (README "Security model").

`federation_acls` is pure: the bindings for a set of principals and topic names.
`apply_acls` sends them with the CreateAcls API (aiokafka has the request but no admin
method; the broker's StandardAuthorizer stores them in the KRaft metadata log).

Every principal gets only what its service does:

- operator: writes (and reads) fi.registry, nothing else;
- aggregators: read queries, responses, registry, feedback and results (rebuilding its
  state); write results, incentives and the DLQ, in transactions (transactional ids
  ``<prefix>fi.aggregator.*`` and ``<prefix>fi.merit``); their consumer group;
- participant p: reads fi.queries and fi.registry, writes fi.responses and fi.dlq, its own
  group ``<prefix>fi.participant.p`` and its own ledger topic ``<prefix>fi.ledger.p``
  (fi_stream.ledger_sync; it may create it).
  It may NOT read fi.responses: no participant sees another's answers (a copycat that
  would replay the others' outputs as its own is refused by the broker);
- clients: write fi.queries, read fi.results;
- auditors: read every topic.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import for_code
from aiokafka.protocol.admin import CreateAclsRequest_v1, DescribeAclsRequest
from aiokafka.protocol.api import Request

from fi_stream.errors import KafkaSetupError
from fi_stream.settings import TopicNames


class Resource(IntEnum):
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5


class Pattern(IntEnum):
    LITERAL = 3
    PREFIXED = 4


class Op(IntEnum):
    READ = 3
    WRITE = 4
    CREATE = 5
    DESCRIBE = 8
    IDEMPOTENT_WRITE = 12


ALLOW = 3


@dataclass(frozen=True, slots=True, order=True)
class AclBinding:
    principal: str  # "User:name"
    resource: Resource
    name: str
    operation: Op
    pattern: Pattern = Pattern.LITERAL

    def line(self) -> str:
        kind = self.resource.name.lower()
        star = "*" if self.pattern is Pattern.PREFIXED else ""
        return f"{self.principal} {self.operation.name} {kind}:{self.name}{star}"


@dataclass(frozen=True, kw_only=True)
class Principals:
    """SASL user names per role."""

    operator: str = "operator"
    aggregators: tuple[str, ...] = ("aggregator",)
    participants: tuple[str, ...] = ()
    clients: tuple[str, ...] = ()
    auditors: tuple[str, ...] = ()


def _user(name: str) -> str:
    return f"User:{name}"


def federation_acls(topics: TopicNames, principals: Principals, prefix: str = "",
                    ledger_topic: str = "fi.ledger") -> list[AclBinding]:
    """The ALLOW bindings of every role (everything else is denied by the authorizer)."""
    out: list[AclBinding] = []

    def topic(user: str, name: str, *ops: Op) -> None:
        out.extend(AclBinding(_user(user), Resource.TOPIC, name, op) for op in ops)

    R, W = Op.READ, Op.WRITE
    t = topics
    topic(principals.operator, t.registry, R, W)
    for a in principals.aggregators:
        for name in (t.queries, t.responses, t.registry, t.feedback, t.results):
            topic(a, name, R)
        for name in (t.results, t.incentives, t.dlq):
            topic(a, name, W)
        out += [AclBinding(_user(a), Resource.GROUP, f"{prefix}fi.aggregator", R,
                           Pattern.PREFIXED),
                AclBinding(_user(a), Resource.TRANSACTIONAL_ID, f"{prefix}fi.aggregator.",
                           W, Pattern.PREFIXED),
                AclBinding(_user(a), Resource.TRANSACTIONAL_ID, f"{prefix}fi.aggregator.",
                           Op.DESCRIBE, Pattern.PREFIXED),
                AclBinding(_user(a), Resource.TRANSACTIONAL_ID, f"{prefix}fi.merit", W),
                AclBinding(_user(a), Resource.TRANSACTIONAL_ID, f"{prefix}fi.merit",
                           Op.DESCRIBE)]
    for p in principals.participants:
        topic(p, t.queries, R)
        topic(p, t.registry, R)
        topic(p, t.responses, W)
        topic(p, t.dlq, W)
        topic(p, f"{prefix}{ledger_topic}.{p}", R, W, Op.CREATE, Op.DESCRIBE)
        out.append(AclBinding(_user(p), Resource.GROUP, f"{prefix}fi.participant.{p}", R))
    for c in principals.clients:
        topic(c, t.queries, W)
        topic(c, t.results, R)
    for a in principals.auditors:
        for name in (t.queries, t.responses, t.results, t.incentives, t.feedback,
                     t.registry, t.dlq):
            topic(a, name, R)
    return sorted(set(out))


class _CreateAcls(Request[CreateAclsRequest_v1]):  # type: ignore[misc]
    """Many bindings in one CreateAcls request (aiokafka's own sends one)."""

    API_KEY = 30

    def __init__(self, bindings: list[AclBinding]) -> None:
        self._bindings = bindings

    def build(self, request_struct_class: Any) -> Any:
        return request_struct_class([
            (int(b.resource), b.name, int(b.pattern), b.principal, "*", int(b.operation),
             ALLOW) for b in self._bindings])


async def apply_acls(admin: AIOKafkaAdminClient, bindings: list[AclBinding],
                     wait_s: float = 30.0) -> int:
    """Create the bindings (idempotent: the authorizer keeps one copy of each); returns
    once the broker's authorizer enforces them all (they reach it through the metadata
    log, a moment after CreateAcls returns)."""
    if not bindings:
        return 0
    response = await admin._send_request(_CreateAcls(bindings))
    for (code, message), binding in zip(response.creation_responses, bindings, strict=True):
        if code:
            raise for_code(code)(f"ACL {binding.line()}: {message}")
    deadline = time.monotonic() + wait_s
    while not set(bindings) <= await describe_acls(admin):
        if time.monotonic() > deadline:
            raise KafkaSetupError(f"ACLs not in force after {wait_s:.0f} s")
        await asyncio.sleep(0.1)
    return len(bindings)


async def describe_acls(admin: AIOKafkaAdminClient) -> set[AclBinding]:
    """Every ALLOW binding the broker's authorizer holds."""
    any_ = 1
    response = await admin._send_request(
        DescribeAclsRequest(any_, None, any_, None, None, any_, any_))
    if response.error_code:
        raise for_code(response.error_code)(f"describe ACLs: {response.error_message}")
    out = set()
    for resource_type, name, pattern, acls in response.resources:
        for principal, _host, operation, permission in acls:
            if permission == ALLOW and operation in Op._value2member_map_:
                out.add(AclBinding(principal, Resource(resource_type), name, Op(operation),
                                   Pattern(pattern)))
    return out
