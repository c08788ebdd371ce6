"""Running a service from the shell: signals → graceful stop, exit codes, shared options."""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

if TYPE_CHECKING:
    from fi_stream.service import Service
    from fi_stream.settings import Settings

T = TypeVar("T")


def settings_from(ctx: typer.Context, **overrides: Any) -> Settings:
    """Settings from the global --config file, the environment and command flags."""
    from fi_stream.logging import configure_logging
    from fi_stream.settings import load_settings

    obj = ctx.ensure_object(dict)
    config: Path | None = obj.get("config")
    settings = load_settings(config, **{k: v for k, v in overrides.items() if v is not None})
    configure_logging(obj.get("log_level") or settings.log_level, settings.log_json)
    return settings


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (not on Windows): every service is an event loop around
    Kafka sockets, and libuv's loop costs a fraction of asyncio's per wake-up and per write."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop  # type: ignore[no-any-return]


def run_async(main: Callable[[], Awaitable[T]], *, kafka: Settings | None = None) -> T:
    """Run `main` on an event loop; with `kafka`, first check (within its connect timeout)
    that the broker answers, so a missing broker is one line, not a stalled start.

    Failures propagate to the one handler around the app (fi_stream_cli.failures)."""
    async def checked() -> T:
        if kafka is not None:
            from fi_stream.kafka.client import probe

            await probe(kafka)
        return await main()

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(checked())


async def serve(service: Service) -> None:
    """Start, wait for SIGTERM/SIGINT (or the service's own end), stop gracefully; exit 1
    if the service stopped because it failed, so a supervisor restarts it."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.request_stop)
    try:
        await service.start()
        settle_heap()
        await service.wait()
    finally:
        await service.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    if service.failure is not None:
        raise typer.Exit(1)


def settle_heap() -> None:
    """Once started, move the heap (torch, numpy, sklearn, models: over a million objects) out
    of the cyclic GC's sight. Otherwise each full collection walks all of it: 200–450 ms
    pauses, several per run, each a latency spike for every query in flight."""
    gc.collect()
    gc.freeze()
