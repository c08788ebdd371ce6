"""Prometheus metrics: each service owns a registry (no global state) and may serve it."""

from __future__ import annotations

import errno
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import Metric

from fi_stream.errors import PortInUseError


class CurrentRegistry(CollectorRegistry):
    """What a process's metrics endpoint serves: the registry of the service it runs now.
    A service restarted after a Kafka outage is a new object with its own metrics
    (counters start again from zero, which Prometheus reads as a reset)."""

    def __init__(self) -> None:
        super().__init__()
        self.current: CollectorRegistry = CollectorRegistry()

    def collect(self) -> Iterable[Metric]:
        return self.current.collect()


def serve_metrics(registry: CollectorRegistry, port: int | None, host: str = "127.0.0.1") -> None:
    """Expose `registry` on http://`host`:`port`/metrics; no-op when `port` is None.

    Loopback by default: metrics name participants and rates, which is nobody else's business
    unless the operator says so (`FI_METRICS_HOST=0.0.0.0`)."""
    if port is None:
        return
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(
                f"metrics port {host}:{port} is already in use (another fi-stream service?);"
                " pick a free one with --metrics-port or FI_METRICS_PORT") from None
        raise
