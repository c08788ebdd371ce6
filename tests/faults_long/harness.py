"""The fault suite's building blocks: services as processes (as users run them), a query
driver, and ONE read_committed checker that every scenario reports through.

Figures (lost, duplicated, time until results flow again, RSS) are printed and appended
as JSON lines to `FI_FAULTS_REPORT` (default `.fi/faults/report.jsonl`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from fi_stream.clock import now_ms
from fi_stream.kafka import make_consumer, make_producer
from fi_stream.kafka.reading import partitions_of
from fi_stream.service_env import service_env
from fi_stream.settings import Settings
from schemas import Result
from schemas.blocks import QueryBlockHeader, block_headers, decode_result_block
from schemas.blocks.convert import results_of
from tests.integration.harness import query_value

#: The services' retry bounds in these tests: a shorter maximum backoff than the default
#: (30 s), so the recovery time measured is the system's, not the last backoff's.
RETRY_ENV = {"FI_RETRY__MAX_BACKOFF_S": "5", "FI_RETRY__INITIAL_BACKOFF_S": "0.5"}
#: Queries' deadline and the rate the driver sends them at.
DEADLINE_MS = 4000
RATE = 20.0


def report_path() -> Path:
    return Path(os.environ.get("FI_FAULTS_REPORT", ".fi/faults/report.jsonl"))


def rss_mib(pid: int) -> float | None:
    """Resident set size of `pid` from /proc (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        return None
    return None


@dataclass
class Services:
    """fi-stream services as child processes, each with its own log file."""

    settings: Settings
    logs: Path
    procs: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    children: list[Any] = field(default_factory=list)  # the `children` fixture: killed at end

    async def spawn(self, name: str, *args: str, **env: str) -> asyncio.subprocess.Process:
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{name}.log").open("ab") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "fi_stream_cli", *args,
                env={**service_env(self.settings), **RETRY_ENV, **env},
                stdout=out, stderr=out, stdin=asyncio.subprocess.DEVNULL)
        self.procs[name] = proc
        self.children.append(proc)
        return proc

    async def participant(self, pid: str, model: Path) -> asyncio.subprocess.Process:
        return await self.spawn(pid, "participant", "run", "--id", pid, "--model", str(model),
                                FI_PARTICIPANT__MAX_BATCH="64")

    async def aggregator(self, instance: str = "a0") -> asyncio.subprocess.Process:
        return await self.spawn(f"aggregator-{instance}", "aggregator", "run",
                                "--instance-id", instance,
                                FI_AGGREGATOR__WINDOW_SECONDS="5")

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    async def wait_log(self, name: str, text: str, timeout: float = 120.0) -> None:
        async with asyncio.timeout(timeout):
            while text not in self.log(name):
                if self.procs[name].returncode is not None:
                    raise AssertionError(f"{name} exited early:\n{self.log(name)[-3000:]}")
                await asyncio.sleep(0.2)

    def alive(self) -> dict[str, bool]:
        return {name: p.returncode is None for name, p in self.procs.items()}

    async def stop(self, timeout: float = 40.0) -> dict[str, int]:
        """SIGTERM every running service; their exit codes (SIGKILL after `timeout`)."""
        for p in self.procs.values():
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
        codes = {}
        for name, p in self.procs.items():
            try:
                codes[name] = await asyncio.wait_for(p.wait(), timeout)
            except TimeoutError:
                p.kill()
                codes[name] = await p.wait()
        return codes


@dataclass
class QueryDriver:
    """Sends digits-shaped queries (quorum 1) at `rate` per second until stopped; only
    queries the broker acknowledged are expected to get a result."""

    settings: Settings
    rate: float = RATE
    acked: dict[str, float] = field(default_factory=dict)  # query id → monotonic send time
    failed: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        producer = make_producer(self.settings, request_timeout_ms=60_000)
        await producer.start()
        rng = np.random.default_rng(0)
        pending: set[asyncio.Task[None]] = set()
        i = 0
        try:
            while not self._stop.is_set():
                block_id = f"q{i:07d}"
                qid = f"{block_id}.0"
                i += 1
                now = now_ms()
                value = query_value(block_id, rng.random(64, dtype=np.float32),
                                    created_at_ms=now, deadline_ms=now + DEADLINE_MS)
                sent = time.monotonic()
                try:
                    fut = await producer.send(self.settings.topic_names.queries, value,
                                              key=block_id.encode(),
                                              headers=block_headers(QueryBlockHeader))
                except KafkaError:
                    self.failed += 1
                    continue
                task = asyncio.create_task(self._acked(fut, qid, sent))
                pending.add(task)
                task.add_done_callback(pending.discard)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 1 / self.rate)
            await asyncio.gather(*pending)
        finally:
            await producer.stop()

    async def _acked(self, fut: asyncio.Future[Any], qid: str, sent: float) -> None:
        try:
            await fut
        except KafkaError:
            self.failed += 1
            return
        self.acked[qid] = sent


class ResultChecker:
    """Follows fi.results from the start with read_committed, as any client would, and
    records when each query's result(s) became visible."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.arrivals: dict[str, list[float]] = {}
        self.results: dict[str, Result] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._consumer = make_consumer(self.settings, group_id=None)
        await self._consumer.start()
        tps = await partitions_of(self._consumer, self.settings.topic_names.results)
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        self._task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        assert self._consumer is not None
        while True:
            got = await self._consumer.getmany(timeout_ms=200)
            now = time.monotonic()
            for records in got.values():
                for r in records:
                    for result in results_of(decode_result_block(r.value)):
                        qid = result.query_id
                        self.arrivals.setdefault(qid, []).append(now)
                        self.results[qid] = result

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def settle(self, expected: set[str], timeout: float) -> None:
        """Wait until every expected query has a result, or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not expected <= self.arrivals.keys():
            await asyncio.sleep(0.5)

    def first_after(self, sent_after: float, sent: dict[str, float],
                    including: str | None = None) -> float | None:
        """When the first result of a query sent after `sent_after` became visible
        (optionally: one that includes participant `including`)."""
        times = [self.arrivals[q][0] for q, t in sent.items()
                 if t >= sent_after and q in self.arrivals
                 and (including is None or including in
                      {a.participant_id for a in self.results[q].included})]
        return min(times) if times else None

    def report(self, scenario: str, driver: QueryDriver, fault_at: float,
               **extra: Any) -> FaultReport:
        expected = set(driver.acked)
        counts = Counter({q: len(t) for q, t in self.arrivals.items()})
        back = self.first_after(fault_at, driver.acked)
        gaps = sorted(t for ts in self.arrivals.values() for t in ts[:1])
        longest = max((b - a for a, b in itertools.pairwise(gaps)), default=0.0)
        statuses = Counter(r.status for r in self.results.values())
        rep = FaultReport(
            scenario=scenario, queries_acked=len(expected), send_failures=driver.failed,
            results=len(self.arrivals), lost=len(expected - self.arrivals.keys()),
            duplicated=sum(1 for c in counts.values() if c > 1),
            results_flow_again_s=None if back is None else round(back - fault_at, 2),
            longest_gap_s=round(longest, 2), statuses=dict(statuses), extra=extra)
        rep.write()
        return rep


@dataclass
class FaultReport:
    scenario: str
    queries_acked: int
    send_failures: int
    results: int
    lost: int
    duplicated: int
    #: From the fault's start to the first visible result of a query sent after it.
    results_flow_again_s: float | None
    #: The longest pause between two first-time results during the whole run.
    longest_gap_s: float
    statuses: dict[str, int]
    extra: dict[str, Any]

    def write(self) -> None:
        line = json.dumps(asdict(self))
        print(f"\nFAULT REPORT {line}")
        path = report_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as out:
            out.write(line + "\n")
