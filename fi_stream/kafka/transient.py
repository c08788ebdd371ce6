"""Which failures mean "Kafka is away, or forgot this member" — the ones a fresh start
after a pause fixes — and a short, stable name for a failure's cause (for logging an
outage once per cause, not once per attempt)."""

from __future__ import annotations

from aiokafka import errors as kafka_errors

from fi_stream.errors import KafkaUnreachableError

#: Errors that mean "the cluster is (or was) away, or forgot this member": a fresh start
#: fixes them. ProducerFenced is here because the broker also answers it to a producer
#: whose transaction it aborted on timeout (a broker or member that stalled).
TRANSIENT: tuple[type[BaseException], ...] = (
    KafkaUnreachableError,  # the start-up probe found no broker (or no answer in time)
    kafka_errors.KafkaConnectionError,
    kafka_errors.KafkaTimeoutError,
    kafka_errors.NoBrokersAvailable,
    kafka_errors.NodeNotReadyError,
    kafka_errors.RequestTimedOutError,
    kafka_errors.CommitFailedError,
    kafka_errors.UnknownMemberIdError,
    kafka_errors.IllegalGenerationError,
    kafka_errors.RebalanceInProgressError,
    kafka_errors.ProducerFenced,
    kafka_errors.InvalidProducerEpoch,
    kafka_errors.OutOfOrderSequenceNumber,
    ConnectionError,
    TimeoutError,
)


def is_transient(exc: BaseException) -> bool:
    """True for failures a fresh start after a pause fixes (see `TRANSIENT`); also any
    error aiokafka marks retriable, and its bare KafkaError (raised for undelivered
    batches and offsets still unstable after a stalled transaction)."""
    if isinstance(exc, TRANSIENT):
        return True
    if isinstance(exc, kafka_errors.KafkaError):
        return bool(exc.retriable) or type(exc) is kafka_errors.KafkaError
    return False


def cause_of(exc: BaseException) -> str:
    """A short, stable name for a failure's cause: its type and the first line of its text
    (the same outage gives the same cause, attempt after attempt)."""
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = text.removeprefix(name).removeprefix(":").strip()  # aiokafka repeats its name
    return f"{name}: {text[:160]}" if text else name
