"""A local KRaft cluster of several nodes, each broker and controller (combined mode), from
the same Maven-resolved jars as the single local broker: what the fault suite needs to
kill a partition leader and watch the cluster elect another.

Layout under `home`: `libs/` (shared by every node), `node-1/`, `node-2/`, ... (each a
`LocalKafka` home). Node i listens on `base_port + 2(i-1)` (clients) and the port after
it (controller quorum). Internal topics are replicated like the data topics the cluster
is for: 3 replicas and 2 in sync on three nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from fi_stream.errors import KafkaSetupError
from fi_stream.kafka.local_broker import LocalKafka
from fi_stream.kafka.topics import replication_for


class LocalCluster:
    """Start, stop and inspect `size` local nodes; node ids are 1..size."""

    def __init__(self, home: Path, *, base_port: int, size: int = 3, heap: str = "384m",
                 infra_dir: Path | None = None) -> None:
        if size < 1:
            raise KafkaSetupError("a cluster needs at least one node")
        self.home = home.resolve()
        self.home.mkdir(parents=True, exist_ok=True)
        id_file = self.home / "cluster.id"
        if not id_file.exists():
            id_file.write_text(uuid.uuid4().hex[:22])
        cluster_id = id_file.read_text().strip()
        voters = ",".join(f"{i}@127.0.0.1:{base_port + 2 * (i - 1) + 1}"
                          for i in range(1, size + 1))
        r = replication_for(size)
        internal = {
            "offsets.topic.replication.factor": str(r.factor),
            "transaction.state.log.replication.factor": str(r.factor),
            "transaction.state.log.min.isr": str(r.min_insync),
            "share.coordinator.state.topic.replication.factor": str(r.factor),
            "share.coordinator.state.topic.min.isr": str(r.min_insync),
            "default.replication.factor": str(r.factor),
            "min.insync.replicas": str(r.min_insync),
        }
        self.nodes = {
            i: LocalKafka(self.home / f"node-{i}", port=base_port + 2 * (i - 1),
                          controller_port=base_port + 2 * (i - 1) + 1, heap=heap,
                          infra_dir=infra_dir, cluster_id=cluster_id, libs=self.home / "libs",
                          overrides={"node.id": str(i), "controller.quorum.voters": voters,
                                     **internal})
            for i in range(1, size + 1)
        }

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes.values())

    def pid(self, node_id: int) -> int | None:
        return self.nodes[node_id].status().pid

    async def up(self, timeout: float = 180.0) -> None:
        """Start every node that is not running (all at once: a controller quorum needs a
        majority to elect a leader), then wait until each broker is registered."""
        first = next(iter(self.nodes.values()))
        await asyncio.to_thread(first.resolve_jars)
        down = [node for node in self.nodes.values() if not node.status().running]
        await asyncio.gather(*(node.up(timeout) for node in down))
        await self.wait_brokers(len(self.nodes), timeout)

    async def start_node(self, node_id: int, timeout: float = 120.0) -> None:
        """(Re)start one node, e.g. after it was killed; returns once the cluster sees it."""
        await self.nodes[node_id].up(timeout)
        await self.wait_brokers(len(self.nodes), timeout)

    async def wait_brokers(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000)
            try:
                await admin.start()
                seen = len((await admin.describe_cluster())["brokers"])
                if seen >= count:
                    return
            except Exception:  # noqa: S110 — not up yet: ask again until the deadline
                pass
            finally:
                await admin.close()
            await asyncio.sleep(0.5)
        raise KafkaSetupError(f"only {seen} of {count} brokers registered after {timeout:.0f}s")

    def down(self) -> None:
        """Stop every node (controlled shutdown, SIGKILL if it hangs)."""
        for node in self.nodes.values():
            node.down(timeout=20)

    def kill(self) -> None:
        """SIGKILL every node at once (tests: a controlled shutdown of the last nodes waits
        for a quorum that is already gone)."""
        for node in self.nodes.values():
            pid = node.status().pid
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for node in self.nodes.values():
            node.down(timeout=10)
