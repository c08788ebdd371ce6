"""From a record as read to what the checks use: `add_record` decodes one record of any
audited topic into the `AuditLog`. The auditor (consumers/auditor.py) and the synthetic
logs of fi_stream.testing both fill their logs through it, so a test audits exactly what
the reader would have read.

fi.queries and fi.results carry blocks (schemas.blocks): a query block becomes one `Query`
view per row, a result block one `Result` view per row, all at the record's position (the
checks are per query; a finding names the record and the query id). A response block is
kept as decoded, with the bytes its signature covers: the signature is verified on those
bytes (fi_stream.block_signing), and `AuditContext` derives its `ResponseBatch` view once.
The other topics stay JSON events. A record that does not decode, or whose block does not
convert, is an `Undecodable` (the report counts it; on an output topic it is a finding),
never an exception."""

from __future__ import annotations

from collections.abc import Sequence

from fi_stream.audit.log import AuditLog, DeadLetter, Logged, Tombstone, TopicKind, Undecodable
from fi_stream.operator import CLIENT_KEY_PREFIX
from schemas import Client, DecodeError, Event, Feedback, Incentive, Participant, decode
from schemas.blocks import decode_query_block, decode_response_block, decode_result_block
from schemas.blocks.convert import queries_of, results_of

Headers = Sequence[tuple[str, bytes]]

#: The JSON topics and their event types (fi.registry: Participant, or Client by key).
_JSON: dict[TopicKind, type[Event]] = {"incentives": Incentive, "feedback": Feedback}


def add_record(log: AuditLog, kind: TopicKind, partition: int, offset: int,
               value: bytes | None, *, key: bytes | None = None, timestamp_ms: int = 0,
               headers: Headers | None = None) -> None:
    """Decode one record of topic `kind` into `log` (see the module's docstring)."""
    log.records[kind] = log.records.get(kind, 0) + 1
    if kind == "dlq":
        log.dlq.append(dead_letter(partition, offset, headers or ()))
        return
    try:
        _add(log, kind, partition, offset, value, key, timestamp_ms)
    except DecodeError as exc:
        log.undecodable.append(Undecodable(kind, partition, offset, exc.reason, exc.detail))
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        # A block that decodes but does not convert (inconsistent rows, spans, ids): as
        # invalid as a header that fails its schema.
        log.undecodable.append(Undecodable(kind, partition, offset, "invalid",
                                           f"{type(exc).__name__}: {exc}"))


def _add(log: AuditLog, kind: TopicKind, partition: int, offset: int, value: bytes | None,
         key: bytes | None, timestamp_ms: int) -> None:
    if kind == "queries":
        log.queries.extend(Logged(q, partition, offset, timestamp_ms)
                           for q in queries_of(decode_query_block(value)))
    elif kind == "responses":
        log.responses.append(Logged(decode_response_block(value), partition, offset,
                                    timestamp_ms))
    elif kind == "results":
        log.results.extend(Logged(r, partition, offset, timestamp_ms)
                           for r in results_of(decode_result_block(value)))
    elif kind == "registry":
        _registry(log, partition, offset, value, key, timestamp_ms)
    else:
        event = decode(value, _JSON[kind])
        target = log.incentives if isinstance(event, Incentive) else log.feedback
        target.append(Logged(event, partition, offset, timestamp_ms))  # type: ignore[arg-type]


def _registry(log: AuditLog, partition: int, offset: int, value: bytes | None,
              key: bytes | None, timestamp_ms: int) -> None:
    """Participants, clients (keys ``client/…``) and tombstones: with an operator key the
    audit judges each of them (a bare tombstone is an unsigned removal)."""
    name = key.decode(errors="replace") if key else ""
    if value is None:
        log.tombstones.append(Tombstone(name, partition, offset))
        return
    if name.startswith(CLIENT_KEY_PREFIX):
        log.clients.append(Logged(decode(value, Client), partition, offset, timestamp_ms))
    else:
        log.registry.append(Logged(decode(value, Participant), partition, offset,
                                   timestamp_ms))


def dead_letter(partition: int, offset: int, headers: Headers) -> DeadLetter:
    """A fi.dlq record by its headers (its value is the original bytes, not decoded)."""
    h = {k: v.decode(errors="replace") for k, v in headers}
    return DeadLetter(
        partition=partition, offset=offset, error=h.get("error", "?"),
        source_topic=h.get("source-topic"),
        source_partition=int(h["source-partition"]) if h.get("source-partition", "").isdigit()
        else None,
        source_offset=int(h["source-offset"]) if h.get("source-offset", "").isdigit() else None,
        consumer=h.get("consumer"),
    )
