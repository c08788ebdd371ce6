"""`audit(log)`: every check in its order, and the report they add up to."""

from __future__ import annotations

from collections import Counter

from fi_stream.audit.context import AuditContext, Verify
from fi_stream.audit.copies import check_copies
from fi_stream.audit.findings import ref
from fi_stream.audit.incentives import check_windows
from fi_stream.audit.log import AuditLog
from fi_stream.audit.merit import measure_merit
from fi_stream.audit.privacy import check_privacy
from fi_stream.audit.report import AuditReport
from fi_stream.audit.results import check_results
from fi_stream.audit.signatures import check_signatures
from fi_stream.block_signing import verify_response_block
from fi_stream.timing import AUDIT_GRACE_MS
from schemas import Result

#: Results may lag their deadline by this much (the aggregator waits for lagging
#: partitions up to 5 s) before a query without one counts as missing.
#: 2 × timing.grace_ms (fi_stream.timing): how far past its deadline a result may lag.
DEFAULT_GRACE_MS = AUDIT_GRACE_MS

#: Topics whose records are the system's own output: one that does not decode is a finding.
_OUTPUT_TOPICS = frozenset({"results", "incentives"})


def audit(log: AuditLog, *, grace_ms: int = DEFAULT_GRACE_MS,
          verify: Verify = verify_response_block,
          merit: bool = True, epsilon_samples: int | None = None) -> AuditReport:
    """Check everything the log allows; see fi_stream.audit for what and how.

    `merit`: also compute, per window with fi.feedback labels, the Shapley values of
    ensemble accuracy and their Spearman correlation with the label-free scores (a
    measurement for the report, not a check). `epsilon_samples`: points of each
    participant's ε-over-time series (each an RDP conversion); default 24 with `merit`,
    none without.
    """
    ctx = AuditContext(log, grace_ms, verify)
    checked = check_results(ctx)
    check_copies(ctx, checked)
    windows = check_windows(ctx, checked)
    if merit:
        measure_merit(ctx, windows, checked)
    samples = epsilon_samples if epsilon_samples is not None else 24 if merit else 0
    spend = check_privacy(ctx, samples)
    check_signatures(ctx)
    undecodable = _undecodable(ctx)
    dlq = Counter(d.error for d in log.dlq)
    sources = Counter(f"{d.error} {d.source_topic or '?'}" for d in log.dlq)
    return AuditReport(counts=_counts(ctx), discrepancies=ctx.findings.by_kind(),
                       spend=spend, dlq=dict(sorted(dlq.items())),
                       dlq_sources=dict(sorted(sources.items())), windows=windows,
                       latencies_ms=_latencies(log), undecodable=undecodable,
                       partial=log.partial)


def _undecodable(ctx: AuditContext) -> dict[str, int]:
    counted: Counter[str] = Counter()
    for u in ctx.log.undecodable:
        counted[f"{u.topic} {u.reason}"] += 1
        if u.topic in _OUTPUT_TOPICS:
            ctx.findings.add("malformed_record", f"{u.reason}: {u.detail}",
                             refs=(ref(u.topic, u.partition, u.offset),))
    return dict(sorted(counted.items()))


def _latencies(log: AuditLog) -> list[int]:
    """Query created → result emitted, for the first result of each query."""
    first: dict[str, Result] = {}
    for logged in log.results:
        first.setdefault(logged.event.query_id, logged.event)
    return [r.completed_at_ms - r.created_at_ms for r in first.values()]


def _counts(ctx: AuditContext) -> dict[str, int]:
    log = ctx.log
    counts = dict(ctx.counts)
    counts.update({f"records_{t}": n for t, n in log.records.items()})
    counts.update(records=log.total_records, responses=len(log.responses),
                  feedback=len(log.feedback), participants=len(ctx.registry.entries),
                  dlq=len(log.dlq), undecodable=len(log.undecodable))
    return dict(sorted(counts.items()))
