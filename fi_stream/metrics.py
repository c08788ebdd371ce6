"""Prometheus metrics: each service owns a registry (no global state) and may serve it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, start_http_server


def serve_metrics(registry: CollectorRegistry, port: int | None) -> None:
    """Expose `registry` on http://0.0.0.0:`port`/metrics; no-op when `port` is None."""
    if port is not None:
        start_http_server(port, registry=registry)
