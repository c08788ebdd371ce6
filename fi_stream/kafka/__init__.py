"""Kafka plumbing shared by all services: clients, topics, dead letters, the local broker."""

from fi_stream.kafka.client import bootstrap_servers, make_admin, make_consumer, make_producer
from fi_stream.kafka.dlq import DeadLetterQueue
from fi_stream.kafka.topics import (
    delete_topics,
    ensure_topics,
    prepare_topics,
    replication_for,
    topic_specs,
)

__all__ = [
    "DeadLetterQueue",
    "bootstrap_servers",
    "delete_topics",
    "ensure_topics",
    "make_admin",
    "make_consumer",
    "make_producer",
    "prepare_topics",
    "replication_for",
    "topic_specs",
]
