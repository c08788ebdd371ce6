"""What every check shares: the log, the findings, the trusted registry, the row index,
and the per-batch verdicts (signature, plausibility) computed once however many checks ask.
`Checked` is a result after its checks, carrying what the later checks need."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fi_stream.audit.findings import Findings
from fi_stream.audit.log import AuditLog, Logged
from fi_stream.audit.registry import Registry
from fi_stream.audit.rows import F64, RowIndex, response_views
from fi_stream.validation import own_spec, privacy_problem, screen_rows
from schemas import Query, ResponseBatch, Result
from schemas.blocks import ResponseBlock

#: (block as decoded, public key) → does the record's signature verify?
Verify = Callable[[ResponseBlock, bytes], bool]
Key = tuple[int, int]  # (partition, offset) in fi.responses


@dataclass(slots=True)
class Checked:
    """A result after its checks, with what the window replay needs."""

    logged: Logged[Result]
    ids: list[str]
    #: Rows of the listed answers, flat indices into the matrix of `width` (see `RowIndex`).
    flat: list[int] = field(default_factory=list)
    width: int = 0
    #: Every listed row resolved (and, once gathered, finite).
    usable: bool = True
    rows: F64 | None = None  # (k, C) float64, gathered for usable results with answers
    #: Per incentive method, what its `add_batch` computed for this result's rows (when
    #: computed in a batch); `IncentiveWindow.add` takes it.
    pre: dict[str, Any] = field(default_factory=dict)
    close_pair: bool = True  # some pair of its rows is within the noise (copycat.suspicious)

    @property
    def result(self) -> Result:
        return self.logged.event


@dataclass(frozen=True, slots=True)
class Listing:
    """A result that lists row `index` of some batch."""

    checked: Checked
    index: int


class AuditContext:
    def __init__(self, log: AuditLog, grace_ms: int, verify: Verify) -> None:
        self.log = log
        self.grace_ms = grace_ms
        self.verify = verify
        self.findings = Findings()
        self.counts = self.findings.counts
        self.registry = Registry(log, self.findings)
        self.blocks = {(r.partition, r.offset): r.event for r in log.responses}
        #: The `ResponseBatch` view of each block (one that does not convert is left out:
        #: whatever lists it finds no response there).
        self.batches: dict[Key, ResponseBatch] = response_views(log.responses)
        if len(self.batches) < len(self.blocks):
            self.counts["responses_unconvertible"] = len(self.blocks) - len(self.batches)
        self.rows = RowIndex(self.batches)
        #: fi.responses position → the results that list a row of it.
        self.listings: dict[Key, list[Listing]] = {}
        self.queries: dict[str, Logged[Query]] = {}
        for q in log.queries:
            if q.event.query_id in self.queries:
                self.counts["duplicate_queries"] += 1
            else:
                self.queries[q.event.query_id] = q
        self.labels: dict[str, int] = {}
        for f in log.feedback:  # the first label of a query counts (as in merit)
            self.labels.setdefault(f.event.query_id, f.event.label)
        self._genuine: dict[Key, bool] = {}
        self._screened: dict[Key, list[str | None]] = {}

    def genuine(self, key: Key) -> bool:
        """Does the record at `key` verify with a key its participant registered (with an
        operator: the key valid when it was produced)? Verified on the record's bytes
        (fi_stream.block_signing), once however many checks ask."""
        known = self._genuine.get(key)
        if known is None:
            block = self.blocks[key]
            keys = self.registry.valid_keys(block.participant_id, block.produced_at_ms) or []
            known = self._genuine[key] = any(self.verify(block, k) for k in keys)
        return known

    def screened(self, key: Key) -> list[str | None]:
        """`screen_rows` of the batch at `key` against its participant's registered privacy
        and published width: exactly the aggregator's verdict (None: plausible)."""
        rows = self._screened.get(key)
        if rows is None:
            rows = self._screened[key] = self._screen(self.batches[key])
        return rows

    def _screen(self, batch: ResponseBatch) -> list[str | None]:
        entry = self.registry.entries.get(batch.participant_id)
        if entry is None:
            return [None] * len(batch.answered)  # `unknown_participant` says it all
        if privacy_problem(batch.privacy, entry.privacy) is not None:
            return ["privacy_mismatch"] * len(batch.answered)
        spec = own_spec(entry, batch.task)
        return list(screen_rows(batch.outputs.to_numpy(), entry.privacy,
                                spec.num_classes if spec is not None else None))

    def list_row(self, key: Key, checked: Checked, index: int) -> None:
        self.listings.setdefault(key, []).append(Listing(checked, index))
