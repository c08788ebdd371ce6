"""Consumer-group state for `fi-stream status`: who is live, and how far behind.

aiokafka 0.14's `describe_consumer_groups` asks a Kafka 4 broker for DescribeGroups v3 and
then cannot decode the answer (the connection closes with "Buffer underrun"); v2 carries
everything needed here (state and members), so it is pinned.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
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


async def describe_groups(admin: AIOKafkaAdminClient, group_ids: list[str]
                          ) -> dict[str, GroupState]:
    """State and member count of each group (one request per coordinator)."""
    by_node: dict[int, list[str]] = defaultdict(list)
    for gid in group_ids:
        by_node[await admin.find_coordinator(gid)].append(gid)
    out: dict[str, GroupState] = {}
    for node, ids in by_node.items():
        response = await admin._client.send(node, _DescribeGroupsV2(ids))
        for group in response.groups:
            _error, gid, state, _ptype, _protocol, members = group[:6]
            out[gid] = GroupState(gid, state, len(members))
    return out
