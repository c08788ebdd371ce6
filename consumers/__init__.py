"""Services that read from Kafka: participant, aggregator, auditor."""
