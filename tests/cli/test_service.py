"""The service lifecycle: a failure, from the main task or from a callback, stops the
service and makes the CLI exit 1 (so a supervisor restarts it); a requested stop exits 0."""

from __future__ import annotations

import asyncio

import pytest
import typer

from fi_stream.service import Service
from fi_stream_cli.runtime import serve


class _Idle(Service):
    name = "idle"

    def __init__(self, error: Exception | None = None) -> None:
        super().__init__()
        self.error = error
        self.closed = False

    async def _open(self) -> None:
        pass

    async def _run(self) -> None:
        if self.error is not None:
            raise self.error
        await self._stopping.wait()

    async def _close(self) -> None:
        self.closed = True


async def test_a_failing_main_task_stops_the_service_with_exit_code_1() -> None:
    service = _Idle(RuntimeError("broker gone"))
    with pytest.raises(typer.Exit) as exit_:
        await asyncio.wait_for(serve(service), 5)
    assert exit_.value.exit_code == 1
    assert isinstance(service.failure, RuntimeError) and service.closed


async def test_a_callback_failure_stops_the_service_too() -> None:
    service = _Idle()
    await service.start()
    service.fail(ValueError("partition not resumed"))
    await asyncio.wait_for(service.wait(), 5)
    await service.stop()
    assert isinstance(service.failure, ValueError) and service.closed


async def test_a_requested_stop_is_not_a_failure() -> None:
    service = _Idle()
    await service.start()
    service.request_stop()
    await service.stop()
    assert service.failure is None
