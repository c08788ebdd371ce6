"""Consumer-group state for `fi-stream status`: who is live, and how far behind.

aiokafka 0.14's `describe_consumer_groups` asks a Kafka 4 broker for DescribeGroups v3 and
then cannot decode the answer (the connection closes with "Buffer underrun"); v2 carries
everything needed here (state and members), so it is pinned.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CoordinatorLoadInProgressError, GroupCoordinatorNotAvailableError
from aiokafka.protocol.admin import DescribeGroupsRequest, DescribeGroupsRequest_v2


class _DescribeGroupsV2(DescribeGroupsRequest):  # type: ignore[misc]
    def build(self, request_struct_class: Any = None) -> Any:
        return super().build(DescribeGroupsRequest_v2)


@dataclass(frozen=True, slots=True)
class GroupState:
    group_id: str
    #: Stable, PreparingRebalance, CompletingRebalance, Empty or Dead.
    state: str
    members: int

    @property
    def live(self) -> bool:
        """Some member is consuming (or (re)joining) right now."""
        return self.members > 0 and self.state != "Dead"


#: How long a group's coordinator may stay unavailable before the group is shown as
#: "Unknown": a fresh broker creates __consumer_offsets on the first group lookup.
COORDINATOR_WAIT_S = 10.0


async def _coordinator(admin: AIOKafkaAdminClient, group_id: str, wait_s: float
                       ) -> int | None:
    """The group's coordinator node; None while none is available after `wait_s`."""
    give_up = time.monotonic() + wait_s
    while True:
        try:
            node: int = await admin.find_coordinator(group_id)
            return node
        except (GroupCoordinatorNotAvailableError, CoordinatorLoadInProgressError):
            if time.monotonic() >= give_up:
                return None
            await asyncio.sleep(0.2)


async def describe_groups(admin: AIOKafkaAdminClient, group_ids: list[str],
                          coordinator_wait_s: float = COORDINATOR_WAIT_S
                          ) -> dict[str, GroupState]:
    """State and member count of each group (one request per coordinator); a group whose
    coordinator is not available yet is "Unknown" with no live member."""
    by_node: dict[int, list[str]] = defaultdict(list)
    out: dict[str, GroupState] = {}
    for gid in group_ids:
        node = await _coordinator(admin, gid, coordinator_wait_s)
        if node is None:
            out[gid] = GroupState(gid, "Unknown", 0)
        else:
            by_node[node].append(gid)
    for node, ids in by_node.items():
        response = await admin._client.send(node, _DescribeGroupsV2(ids))
        for group in response.groups:
            _error, gid, state, _ptype, _protocol, members = group[:6]
            out[gid] = GroupState(gid, state, len(members))
    return out
