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
    return uvloop.new_event_loop


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


async def serve(service: Service | Callable[[], Service],
                settings: Settings | None = None) -> None:
    """Run until SIGTERM/SIGINT (or the service's own end), stop gracefully; exit 1 if the
    service stopped because it failed, so a supervisor restarts it.

    Given a factory and `settings`, the service waits for Kafka instead of failing fast:
    before each start the broker is probed (within `kafka.connect_timeout_s`); a service
    that cannot reach Kafka, or fails because Kafka went away, is made afresh and started
    again with backoff (`fi_stream.supervision`, bounds in `settings.retry`). Only an
    outage longer than `retry.give_up_s` ends it: one line, exit 1."""
    from fi_stream.errors import FiStreamError, KafkaUnreachableError
    from fi_stream.kafka.client import probe
    from fi_stream.kafka.transient import cause_of, is_transient
    from fi_stream.service import Service
    from fi_stream.supervision import Backoff, run_until, supervise

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    settled = False

    def started(_: Service) -> None:
        nonlocal settled
        if not settled:
            settle_heap()
            settled = True

    try:
        if isinstance(service, Service) or settings is None:
            one = service if isinstance(service, Service) else service()
            failure = await run_until(one, stop, started)
        else:
            r = settings.retry
            backoff = Backoff(initial_s=r.initial_backoff_s, max_s=r.max_backoff_s,
                              give_up_s=r.give_up_s, healthy_s=r.healthy_s)
            failure = await supervise(service, stop, backoff, on_started=started,
                                      ready=lambda: probe(settings))
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    if failure is None:
        return
    if isinstance(failure, FiStreamError):
        raise failure  # one line and its exit code (fi_stream_cli.failures)
    if is_transient(failure):
        given = f" after {settings.retry.give_up_s:g} s of retries" if settings else ""
        raise KafkaUnreachableError(
            f"Kafka unavailable{given} ({cause_of(failure)}); is the broker up "
            "(`fi-stream kafka status`, FI_KAFKA__BOOTSTRAP)?") from failure
    raise typer.Exit(1)  # a bug: the service logged it with its traceback


def settle_heap() -> None:
    """Once started, move the heap (torch, numpy, sklearn, models: over a million objects) out
    of the cyclic GC's sight. Otherwise each full collection walks all of it: 200–450 ms
    pauses, several per run, each a latency spike for every query in flight."""
    gc.collect()
    gc.freeze()


async def serve_with_metrics(make: Callable[[], Any], settings: Settings) -> None:
    """`serve` a service factory with its Prometheus metrics on `settings.metrics_port`.

    The endpoint shows the registry of the service running now: a service started afresh
    after a Kafka outage is a new object with its own metrics (counters restart at zero)."""
    from fi_stream.metrics import CurrentRegistry, serve_metrics

    metrics = CurrentRegistry()

    def tracked() -> Service:
        service = make()
        metrics.current = service.metrics_registry
        return service  # type: ignore[no-any-return]

    serve_metrics(metrics, settings.metrics_port, settings.metrics_host)
    await serve(tracked, settings)
