"""Prometheus metrics: each service owns a registry (no global state) and may serve it.

Naming: counters are `prometheus_client.Counter`s, exposed with the `_total` suffix
(`fi_aggregator_results` → `fi_aggregator_results_total`); gauges say their unit.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from prometheus_client.metrics_core import Metric

from fi_stream.errors import PortInUseError

#: The lag gauge is refreshed at most this often (it is read from the consumer's state).
LAG_INTERVAL_S = 1.0


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


def lag(end: int | None, position: int | None) -> int | None:
    """Records between a position and the partition's end; None when either is unknown."""
    if end is None or end < 0 or position is None:
        return None
    return max(0, end - position)


def _position(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
    """The consumer's next offset for `tp` without a request (None while it is being
    reset). aiokafka's `position()` may wait for a reset; a metric must never block."""
    try:
        state = consumer._subscription.subscription.assignment.state_value(tp)
    except AttributeError:  # not assigned (any more), or another aiokafka's internals
        return None
    return int(state.position) if state is not None and state.has_valid_position else None


class ConsumerLag:
    """`fi_consumer_lag_records{topic,partition}`: how far a service's consumer is behind
    the end of each partition it reads (the last stable offset for read_committed readers,
    else the high watermark), as of its last fetch. Costs no request: the ends come with
    every fetch response, the positions are the consumer's own."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._gauge = Gauge("fi_consumer_lag_records",
                            "Records not yet read, per input partition (end − position)",
                            ["topic", "partition"], registry=registry)
        self._shown: set[TopicPartition] = set()
        self._last = 0.0

    def update(self, consumer: AIOKafkaConsumer, *, force: bool = False) -> None:
        now = time.monotonic()
        # Until a partition is shown (positions are unknown until the first fetch after a
        # join), look at every call: a throttled first look would hide the lag for a second.
        if not force and self._shown and now - self._last < LAG_INTERVAL_S:
            return
        self._last = now
        assignment = getattr(consumer, "assignment", None)  # test doubles may lack it
        if assignment is None:
            return
        self.set(assignment(), lambda tp: _end(consumer, tp), lambda tp: _position(consumer, tp))

    def set(self, partitions: Iterable[TopicPartition],
            end: Callable[[TopicPartition], int | None],
            position: Callable[[TopicPartition], int | None]) -> None:
        """Show the lag of `partitions` (`end(tp)`, `position(tp)`); drop the others."""
        shown: set[TopicPartition] = set()
        for tp in partitions:
            value = lag(end(tp), position(tp))
            if value is not None:
                self._gauge.labels(tp.topic, str(tp.partition)).set(value)
                shown.add(tp)
        for tp in self._shown - shown:
            self._gauge.remove(tp.topic, str(tp.partition))
        self._shown = shown


def _end(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
    end: int | None = consumer.last_stable_offset(tp)
    if end is None or end < 0:
        end = consumer.highwater(tp)
    return end
