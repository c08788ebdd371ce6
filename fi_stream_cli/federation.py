"""A whole federation on one machine, as separate processes: the demo and the end-to-end
benchmark run participants and aggregators exactly as users would, one process each."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from torch import nn

from fi_stream.admission import participant_entry, publish, settings_privacy
from fi_stream.kafka import ensure_topics, make_admin
from fi_stream.kafka.groups import describe_groups
from fi_stream.kafka.local_broker import LocalKafka
from fi_stream.models import save_model, train_participant
from fi_stream.models.store import load_spec
from fi_stream.models.train import train_teachers
from fi_stream.registry import RegistryView
from fi_stream.service_env import service_env
from fi_stream.settings import Settings, load_settings
from fi_stream.signing import PRIVATE_KEY_FILE, load_or_create_key, public_key_bytes
from fi_stream_cli.status import participant_group
from schemas import Budget


def _teachers(model_dir: Path) -> int | None:
    """The teachers of the model in `model_dir` (None: one model, or none trained yet)."""
    return load_spec(model_dir).teachers if (model_dir / "spec.json").exists() else None


def fresh_settings(base: Settings, prefix: str, **groups: dict[str, Any]) -> Settings:
    """`base` with its own topic prefix (an isolated run) and some groups overridden."""
    values = base.model_dump(exclude_unset=True)
    values["kafka"] = {**base.kafka.model_dump(exclude_unset=True), "topic_prefix": prefix}
    for name, update in groups.items():
        values[name] = {**getattr(base, name).model_dump(exclude_unset=True), **update}
    return load_settings(None, **values)


@contextlib.asynccontextmanager
async def local_broker(settings: Settings) -> AsyncIterator[None]:
    """The local broker if no cluster is given; stopped again only if this started it."""
    if settings.kafka.bootstrap:
        yield
        return
    k = settings.kafka
    broker = LocalKafka(k.local_home, port=k.local_port, controller_port=k.local_controller_port)
    started = not broker.status().running
    await broker.up()
    try:
        yield
    finally:
        if started:
            broker.down()


@dataclass
class LocalFederation:
    settings: Settings
    home: Path
    procs: list[asyncio.subprocess.Process] = field(default_factory=list)

    def train(self, ids: list[str], *, alpha: float, seed: int,
              teachers: int | None = None) -> dict[str, float]:
        """Train and save every participant's model (a teacher ensemble of K when
        `teachers`); returns their clean test accuracy."""
        accuracy = {}
        for k, pid in enumerate(ids):
            module: nn.Module
            if teachers is None:
                module, spec = train_participant(shard=k, of=len(ids), alpha=alpha, seed=seed,
                                                 participant_id=pid)
            else:
                module, spec = train_teachers(shard=k, of=len(ids), alpha=alpha, seed=seed,
                                              teachers=teachers, participant_id=pid)
            save_model(self.home / "models" / pid, module, spec)
            accuracy[pid] = spec.metrics["test_accuracy"]
        return accuracy

    async def _spawn(self, name: str, *args: str) -> None:
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        with (self.home / "logs" / f"{name}.log").open("ab") as out:
            self.procs.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "fi_stream_cli", *args, env=service_env(self.settings),
                stdout=out, stderr=out, stdin=asyncio.subprocess.DEVNULL))

    async def admit(self, ids: list[str], operator: Ed25519PrivateKey) -> None:
        """Act as the operator: admit each participant with the key in its model directory
        (created here if new, as `participant run` would)."""
        p = self.settings.privacy
        for pid in ids:
            key = load_or_create_key(self.home / "models" / pid / PRIVATE_KEY_FILE)
            await publish(self.settings, participant_entry(
                pid, public_key_bytes(key), tasks=["digits"],
                budget=Budget(epsilon_max=p.epsilon_max, delta=p.delta),
                privacy=settings_privacy(self.settings, _teachers(self.home / "models" / pid)),
            ), operator)

    async def start(self, ids: list[str], aggregators: int = 1,
                    operator: Ed25519PrivateKey | None = None) -> None:
        """Participants first (they register, or `operator` admits them), then the
        aggregators; ready when registered."""
        await ensure_topics(self.settings)
        if operator is not None:
            await self.admit(ids, operator)
        for pid in ids:
            await self._spawn(pid, "participant", "run", "--id", pid,
                              "--model", str(self.home / "models" / pid))
        for i in range(aggregators):
            await self._spawn(f"aggregator-{i}", "aggregator", "run", "--instance-id", f"a{i}")
        registry = RegistryView(self.settings)
        await registry.start()
        try:
            await registry.wait_for(set(ids), timeout=120)
        finally:
            await registry.stop()
        if operator is not None:
            # The operator's admissions are in the registry before any participant runs:
            # ready is when every participant's group consumes.
            await self._wait_consuming(ids, timeout=120)

    async def _wait_consuming(self, ids: list[str], timeout: float) -> None:
        groups = [participant_group(self.settings, pid) for pid in ids]
        admin = make_admin(self.settings)
        await admin.start()
        try:
            deadline = time.monotonic() + timeout
            while True:
                states = await describe_groups(admin, groups)
                waiting = [g for g in groups
                           if g not in states or not states[g].live
                           or states[g].state != "Stable"]
                if not waiting:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"participants not consuming after {timeout:g} s: "
                                       f"{waiting} (see their logs in {self.home / 'logs'})")
                await asyncio.sleep(0.2)
        finally:
            await admin.close()

    async def stop(self, timeout: float = 30) -> list[int]:
        """SIGTERM everyone (graceful), SIGKILL what is still there after `timeout`."""
        for p in self.procs:
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
        codes = []
        deadline = time.monotonic() + timeout
        for p in self.procs:
            try:
                left = max(0.1, deadline - time.monotonic())
                codes.append(await asyncio.wait_for(p.wait(), left))
            except TimeoutError:
                p.kill()
                codes.append(await p.wait())
        self.procs.clear()
        return codes
