"""The participant's Prometheus metrics, on the registry the service is given."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from fi_stream.metrics import ConsumerLag


class ParticipantMetrics:
    """What a participant exports to Prometheus (`fi_participant_*`, and its consumer lag)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.queries = Counter("fi_participant_queries", "Queries seen", ["outcome"],
                               registry=registry)
        self.batch_size = Histogram("fi_participant_batch_size", "Queries per micro-batch",
                                    buckets=(1, 4, 16, 64, 256, 1024, 4096), registry=registry)
        self.device_seconds = Histogram("fi_participant_device_seconds",
                                        "Forward+privatize time per batch", registry=registry)
        self.decode_seconds = Histogram("fi_participant_decode_seconds",
                                        "Decode+check time per batch", registry=registry)
        self.encode_seconds = Histogram("fi_participant_encode_seconds",
                                        "Encode+sign time per batch", registry=registry)
        self.epsilon = Gauge("fi_participant_epsilon_spent", "Privacy spent (ε at δ)",
                             registry=registry)
        self.reused = Counter("fi_participant_reused_answers",
                              "Answers replayed from the reuse cache (no privacy spent)",
                              registry=registry)
        self.lag = ConsumerLag(registry)
