"""The lifecycle every long-running service shares (aiokafka's habits): `start()`, an
idempotent `stop()`, `async with`, one main task whose failure stops the service."""

from __future__ import annotations

import abc
import asyncio
import contextlib
from typing import Self

import structlog

from fi_stream.kafka.transient import cause_of, is_transient

log = structlog.get_logger(__name__)


class Service(abc.ABC):
    name = "service"

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._closed = False
        self._failure: BaseException | None = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        await self._open()
        self._task = asyncio.create_task(self._run(), name=self.name)
        self._task.add_done_callback(self._on_task_done)

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            self.fail(exc)

    def fail(self, exc: BaseException) -> None:
        """Stop because of `exc` (from the main task, or a callback such as a rebalance
        listener, whose errors aiokafka would only log): logged once, kept in `failure`."""
        if self._failure is None:
            self._failure = exc
            if is_transient(exc):  # the cluster went away: the supervisor logs the outage
                log.warning(f"{self.name}_interrupted", cause=cause_of(exc))
            else:
                log.error(f"{self.name}_failed", exc_info=exc)
        self._stopping.set()

    @property
    def failure(self) -> BaseException | None:
        """Why the service stopped by itself; None after a requested stop."""
        return self._failure

    def request_stop(self) -> None:
        """Signal-safe: ask the main loop to stop polling; `stop()` waits for the rest."""
        self._stopping.set()

    async def wait(self) -> None:
        """Block until the service stops by itself or is asked to."""
        await self._stopping.wait()

    async def stop(self) -> None:
        """Stop polling, let the main task finish what it holds, then close. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task  # its failure was logged by _on_task_done
        await self._close()

    @abc.abstractmethod
    async def _open(self) -> None:
        """Acquire clients and state; called once by `start()` before the main task."""

    @abc.abstractmethod
    async def _run(self) -> None:
        """The main loop; returns soon after `self._stopping` is set."""

    @abc.abstractmethod
    async def _close(self) -> None:
        """Release what `_open` acquired (after the main task has finished)."""
