"""Audit by replay: recompute results, incentives and privacy spend from the log, and name
every discrepancy. Pure: the caller reads the topics (consumers/auditor.py) and hands in the
decoded events with their log positions; nothing here does I/O or reads a clock.

What is checked (DESIGN §1, §4, §6), each finding a `Discrepancy` with a stable `kind`:

- every query has exactly one result (`missing_result`, `duplicate_result`), and every
  result a query (`result_without_query`) that it agrees with (`result_query_mismatch`);
- each result's aggregate, prediction and confidence equal `aggregate(rows, strategy)` over
  exactly the rows it lists, bit for bit (`aggregate_mismatch`, `prediction_mismatch`,
  `confidence_mismatch`), its status follows from its counts (`status_mismatch`);
- every listed answer exists (`unknown_response`), is that participant's
  (`response_participant_mismatch`) answer to that query (`response_query_mismatch`), was
  produced by the deadline (`response_after_deadline`), is signed with a key registered for
  the participant (`unknown_participant`, `bad_signature`), and is not also listed late
  (`late_response_used`);
- every incentive equals a replay of `IncentiveWindow` over the window's results
  (`incentive_score_mismatch`, `incentive_reward_mismatch`, `incentive_counts_mismatch`,
  `incentive_window_mismatch`, `incentive_method_mismatch`, `incentive_budget_mismatch`,
  `duplicate_incentive`, `missing_incentive`);
- every answer row a result includes is plausible for the participant's registered
  privacy (`implausible_answer_used`, fi_stream.validation.screen_rows), and every row it
  lists as excluded really is not (`wrong_exclusion`); a `rejected` result includes nothing
  and says why (`status_mismatch`);
- every participant's privacy spend, recomputed from its VALIDLY SIGNED response batches
  (a forged batch spends nothing of anyone's), is within the budget it registered
  (`budget_exceeded`);
- the copies a result left out are copies, and none it included is (`copy_flag_mismatch`:
  `fi_stream.copycat.flag_copies` over its included and copied rows, registered σ·C);
- with the operator's public key (`AuditLog.operator_pubkey`): every registry record is
  operator-signed (`unsigned_registry_record` for unsigned entries and bare tombstones,
  `forged_registry_record` for a signature that does not verify, `stale_registry_record`
  for a replay of an older admission), only trusted entries give keys and budgets, and
  each batch verifies with the key the operator made valid at its `produced_at_ms`.

A *slice* of the log (``AuditLog.partial``) is audited as far as it allows: what needs a
record outside the slice is counted as out of range instead of reported.

The log is read as blocks (issue 13): `ingest.add_record` turns each record into what the
checks use (per-query views of query and result blocks, response blocks as decoded, their
signatures checked on the record bytes); a record that is not a valid block is counted as
undecodable (a `malformed_record` finding on an output topic), never an exception.

The package, one module per job: `log` (what the reader hands in), `ingest` (record → log),
`bounds` (which slice),
`findings` (kinds and discrepancies), `report` (the typed output), `page` (it as HTML),
`rows` (a result's rows), `registry` (trusted keys), then one module per check: `results`,
`aggregates`, `copies`, `signatures`, `incentives`, `merit`, `privacy`; `replay` recomputes
under another strategy and `run` puts the checks in order.
"""

from fi_stream.audit.bounds import TIME_RANGED, Bound
from fi_stream.audit.context import Verify
from fi_stream.audit.findings import KINDS, Discrepancy, Kind, WindowKey, ref
from fi_stream.audit.ingest import add_record, dead_letter
from fi_stream.audit.log import (
    TOPIC_KINDS,
    AuditLog,
    DeadLetter,
    Logged,
    Position,
    Tombstone,
    TopicKind,
    Undecodable,
)
from fi_stream.audit.registry import KEY_SKEW_MS, registered_keys
from fi_stream.audit.replay import ReplayReport, replay
from fi_stream.audit.report import AuditReport, PrivacySpend, WindowAudit
from fi_stream.audit.rows import RowIndex
from fi_stream.audit.run import DEFAULT_GRACE_MS, audit

__all__ = [
    "DEFAULT_GRACE_MS", "KEY_SKEW_MS", "KINDS", "TIME_RANGED", "TOPIC_KINDS", "AuditLog",
    "AuditReport", "Bound", "DeadLetter", "Discrepancy", "Kind", "Logged", "Position",
    "PrivacySpend", "ReplayReport", "RowIndex", "Tombstone", "TopicKind", "Undecodable",
    "Verify", "WindowAudit", "WindowKey", "add_record", "audit", "dead_letter", "ref",
    "registered_keys", "replay",
]
