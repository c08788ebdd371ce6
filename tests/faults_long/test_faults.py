"""Faults the federation survives, on real brokers of its own (`make test-faults`).

Each scenario runs participants and an aggregator as processes, sends queries at a steady
rate, injects one fault mid-stream, and is checked by the one read_committed checker
(`harness.ResultChecker`): 0 lost, 0 duplicated, no service exited, and the time until
results flow again is reported.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import NewTopic

from fi_stream.kafka import make_admin, prepare_topics
from fi_stream.kafka.local_broker import LocalKafka
from fi_stream.kafka.local_cluster import LocalCluster
from fi_stream.kafka.topics import Replication
from fi_stream.registry import RegistryView
from fi_stream.settings import Settings

from .conftest import fault_settings
from .harness import FaultReport, QueryDriver, ResultChecker, Services, rss_mib

pytestmark = [pytest.mark.faults, pytest.mark.timeout(1800)]

#: How long a broker or participant stays paused: past the consumers' 10 s session.
PAUSE_S = 15.0
WARM_S = 10.0
AFTER_S = 25.0
#: The soak's length (FI_SOAK_S shortens it) and how often it samples RSS.
SOAK_S = float(os.environ.get("FI_SOAK_S", "600"))
SAMPLE_S = 10.0


async def _federation(settings: Settings, model_dirs: dict[str, Path], logs: Path,
                      children: list[Any], pids: tuple[str, ...] = ("p1", "p2")) -> Services:
    """Participants (they register), then the aggregator; ready once it has started."""
    services = Services(settings, logs, children=children)
    for pid in pids:
        await services.participant(pid, model_dirs[pid])
    view = RegistryView(settings)
    await view.start()
    try:
        await view.wait_for(set(pids), timeout=180)
    finally:
        await view.stop()
    await services.aggregator()
    await services.wait_log("aggregator-a0", "aggregator_resumed")
    return services


async def _run(name: str, settings: Settings, services: Services,
               fault: Callable[[], Awaitable[dict[str, Any]]],
               after_s: float = AFTER_S) -> tuple[FaultReport, ResultChecker, QueryDriver]:
    """Stream, inject `fault` after a warm-up, stream on, stop sending, let every acked
    query get its result, report; every service must still run, then exit 0 on SIGTERM."""
    checker = ResultChecker(settings)
    await checker.start()
    driver = QueryDriver(settings)
    driver.start()
    await asyncio.sleep(WARM_S)
    fault_at = time.monotonic()
    extra = await fault()
    await asyncio.sleep(after_s)
    await driver.stop()
    await checker.settle(set(driver.acked), timeout=120)
    alive = services.alive()
    extra_after = extra.pop("after", None)
    if callable(extra_after):
        extra.update(extra_after(checker, driver))
    report = checker.report(name, driver, fault_at, alive=alive, **extra)
    await checker.stop()
    codes = await services.stop()
    logs = {n: services.log(n)[-2000:] for n in services.procs}
    assert report.lost == 0 and report.duplicated == 0, (report, logs)
    assert all(alive.values()), (alive, logs)
    assert set(codes.values()) == {0}, (codes, logs)
    assert report.results_flow_again_s is not None
    return report, checker, driver


async def test_broker_sigkill_and_restart_mid_stream(
        broker: LocalKafka, model_dirs: dict[str, Path], tmp_path: Path,
        children: list[Any]) -> None:
    await broker.up(timeout=120)
    settings = fault_settings(broker.bootstrap)
    await prepare_topics(settings)
    services = await _federation(settings, model_dirs, tmp_path / "logs", children)

    async def kill_and_restart() -> dict[str, Any]:
        pid = broker.status().pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        began = time.monotonic()
        await asyncio.sleep(2.0)
        await broker.up(timeout=120)
        return {"broker_restart_s": round(time.monotonic() - began, 1)}

    await _run("broker_sigkill_restart", settings, services, kill_and_restart)


async def test_broker_sigstop_past_the_session_timeout(
        broker: LocalKafka, model_dirs: dict[str, Path], tmp_path: Path,
        children: list[Any]) -> None:
    await broker.up(timeout=120)
    settings = fault_settings(broker.bootstrap)
    await prepare_topics(settings)
    services = await _federation(settings, model_dirs, tmp_path / "logs", children)

    async def pause() -> dict[str, Any]:
        pid = broker.status().pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        await asyncio.sleep(PAUSE_S)
        os.kill(pid, signal.SIGCONT)
        return {"paused_s": PAUSE_S}

    await _run("broker_sigstop", settings, services, pause)


async def test_participant_sigstop_past_its_session_then_sigcont(
        broker: LocalKafka, model_dirs: dict[str, Path], tmp_path: Path,
        children: list[Any]) -> None:
    """Defect 5: the participant used to exit on SIGCONT (CommitFailedError). It must
    rejoin, answer again, and lose nothing."""
    await broker.up(timeout=120)
    settings = fault_settings(broker.bootstrap)
    await prepare_topics(settings)
    services = await _federation(settings, model_dirs, tmp_path / "logs", children)
    resumed: list[float] = []

    async def pause() -> dict[str, Any]:
        p1 = services.procs["p1"]
        p1.send_signal(signal.SIGSTOP)
        await asyncio.sleep(PAUSE_S)
        p1.send_signal(signal.SIGCONT)
        resumed.append(time.monotonic())

        def after(checker: ResultChecker, driver: QueryDriver) -> dict[str, Any]:
            back = checker.first_after(resumed[0], driver.acked, including="p1")
            return {"paused_s": PAUSE_S,
                    "p1_answers_again_s": None if back is None else round(back - resumed[0], 2),
                    "p1_commits_refused": services.log("p1").count("participant_commit_refused")}

        return {"after": after}

    report, _, _ = await _run("participant_sigstop", settings, services, pause)
    assert report.extra["p1_answers_again_s"] is not None, report


async def test_three_broker_cluster_loses_its_partition_leader(
        cluster: LocalCluster, model_dirs: dict[str, Path], tmp_path: Path,
        children: list[Any]) -> None:
    settings = fault_settings(cluster.bootstrap)
    admin = make_admin(settings)
    await admin.start()
    try:  # an existing topic below what the cluster affords: topics create warns
        await admin.create_topics([NewTopic(settings.topic_names.dlq, 1, 1)])
    finally:
        await admin.close()
    report = await prepare_topics(settings)
    assert report.brokers == 3 and report.replication == Replication(3, 2)
    assert set(report.under_replicated) == {settings.topic_names.dlq}
    services = await _federation(settings, model_dirs, tmp_path / "logs", children)

    async def kill_leader() -> dict[str, Any]:
        admin = make_admin(settings)
        await admin.start()
        try:
            described = await admin.describe_topics([settings.topic_names.queries])
        finally:
            await admin.close()
        leader = next(p["leader"] for p in described[0]["partitions"] if p["partition"] == 0)
        pid = cluster.pid(leader)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        return {"killed_node": leader, "replication": [3, 2]}

    await _run("cluster_leader_sigkill", settings, services, kill_leader)


async def test_soak_with_one_participant_down_keeps_memory_bounded(
        broker: LocalKafka, model_dirs: dict[str, Path], tmp_path: Path,
        children: list[Any]) -> None:
    """Every query waits for a registered participant that never answers (results are
    partial at the deadline) for `FI_SOAK_S` seconds; RSS of each service is sampled."""
    await broker.up(timeout=120)
    settings = fault_settings(broker.bootstrap)
    await prepare_topics(settings)
    services = await _federation(settings, model_dirs, tmp_path / "logs", children,
                                 pids=("p1", "p2", "p3"))
    p3 = services.procs.pop("p3")
    p3.send_signal(signal.SIGKILL)
    await p3.wait()
    samples: dict[str, list[float]] = {name: [] for name in services.procs}

    async def soak() -> dict[str, Any]:
        deadline = time.monotonic() + SOAK_S
        while time.monotonic() < deadline:
            for name, proc in services.procs.items():
                rss = rss_mib(proc.pid)
                if rss is not None:
                    samples[name].append(rss)
            await asyncio.sleep(min(SAMPLE_S, max(0.0, deadline - time.monotonic())))
        return {"soak_s": SOAK_S, "rss_mib": {
            name: {"first": round(s[0], 1), "last": round(s[-1], 1), "max": round(max(s), 1),
                   "samples": len(s)} for name, s in samples.items() if s}}

    report, _, _ = await _run("soak_one_participant_down", settings, services, soak,
                              after_s=0.0)
    for name, s in samples.items():
        half = len(s) // 2
        assert half >= 1, f"too few RSS samples of {name}"
        # Bounded: the second half never grows past the first half's peak by more than
        # 20 % + 32 MiB (allocator slack), i.e. no steady leak.
        assert max(s[half:]) <= max(s[:half]) * 1.2 + 32, (name, s)
    assert report.statuses.keys() <= {"partial"}, report.statuses
