"""Whose keys and budgets the audit trusts: every key a participant registered (an open
registry), or, with the operator's public key, only operator-signed entries, with the
period each key was valid (records the operator did not sign are findings)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from fi_stream.audit.findings import Findings, Kind, ref
from fi_stream.audit.log import AuditLog, Logged
from fi_stream.operator import ACCEPTED, KeyPeriod, Verdict, judge, registry_key
from schemas import Client, Participant

#: A batch may be signed with a key up to this long outside the period the operator made
#: it valid (clocks of the operator and the participant differ; a rotation takes effect
#: when the participant restarts).
KEY_SKEW_MS = 2_000

_REFUSED: dict[Verdict, Kind] = {
    "unsigned": "unsigned_registry_record", "bare_tombstone": "unsigned_registry_record",
    "forged": "forged_registry_record", "key_mismatch": "forged_registry_record",
    "stale": "stale_registry_record",
}


def registered_keys(registry: Iterable[Logged[Participant]]) -> dict[str, list[bytes]]:
    """Every public key each participant registered, in log order.

    A batch is genuine if ANY of them verifies it: a participant that rotated its key still
    signed its older batches with the old one (compaction may have dropped it; then the
    old batches are reported)."""
    keys: dict[str, list[bytes]] = {}
    for logged in registry:
        p = logged.event
        known = keys.setdefault(p.participant_id, [])
        if p.public_key not in known:
            known.append(p.public_key)
    return keys


@dataclass(frozen=True, slots=True)
class _Record:
    """One fi.registry record, whatever it holds (None: a tombstone)."""

    partition: int
    offset: int
    key: str
    entry: Participant | Client | None


def _records(log: AuditLog) -> list[_Record]:
    records = [_Record(p.partition, p.offset, registry_key(p.event), p.event)
               for p in log.registry]
    records += [_Record(c.partition, c.offset, registry_key(c.event), c.event)
                for c in log.clients]
    records += [_Record(t.partition, t.offset, t.key, None) for t in log.tombstones]
    return sorted(records, key=lambda r: (r.partition, r.offset))


def _open_period(periods: list[KeyPeriod], entry: Participant) -> None:
    """A new admission of `entry`'s participant ends its open key period and, if active,
    opens one for its key."""
    if periods and periods[-1].until_ms is None:
        periods[-1] = KeyPeriod(periods[-1].public_key, periods[-1].since_ms,
                                entry.registered_at_ms)
    if entry.active:
        periods.append(KeyPeriod(entry.public_key, entry.registered_at_ms, None))


def trusted_registry(log: AuditLog, operator_pubkey: bytes, findings: Findings
                     ) -> tuple[dict[str, list[KeyPeriod]], dict[str, Participant]]:
    """Replay the registry in log order as a `RegistryView` would: flag every record
    the operator did not sign, and collect the key periods of the trusted ones."""
    latest: dict[str, Participant | Client] = {}
    periods: dict[str, list[KeyPeriod]] = defaultdict(list)
    for r in _records(log):
        verdict = judge(r.entry, r.key, latest.get(r.key), operator_pubkey)
        if verdict not in ACCEPTED:
            findings.add(_REFUSED[verdict], f"registry record for {r.key!r} refused: {verdict}",
                         participant_id=r.key if isinstance(r.entry, Participant | None)
                         else None, refs=(ref("registry", r.partition, r.offset),))
            continue
        assert r.entry is not None  # judge refuses tombstones when there is an operator
        latest[r.key] = r.entry
        if isinstance(r.entry, Participant):
            _open_period(periods[r.entry.participant_id], r.entry)
    entries = {k: e for k, e in latest.items() if isinstance(e, Participant)}
    return dict(periods), entries


class Registry:
    """The registry as the audit trusts it: entries (budgets, privacy) and valid keys."""

    def __init__(self, log: AuditLog, findings: Findings) -> None:
        self.keys = registered_keys(log.registry)
        self.entries = {p.event.participant_id: p.event for p in log.registry}
        #: With an operator: the keys it made valid per participant, over time.
        self.periods: dict[str, list[KeyPeriod]] | None = None
        if log.operator_pubkey is not None:
            self.periods, self.entries = trusted_registry(log, log.operator_pubkey, findings)

    def valid_keys(self, pid: str, at_ms: int) -> list[bytes] | None:
        """Keys that may have signed a batch of `pid` produced at `at_ms` (None: `pid` was
        never admitted)."""
        if self.periods is None:
            keys = self.keys.get(pid)
            return list(reversed(keys)) if keys else None
        periods = self.periods.get(pid)
        if not periods:
            return None
        return [p.public_key for p in periods
                if p.since_ms - KEY_SKEW_MS <= at_ms
                and (p.until_ms is None or at_ms < p.until_ms + KEY_SKEW_MS)]

    def noise_std(self, pid: str) -> float:
        """σ·C as registered (the latest entry, as the aggregator's registry view has it)."""
        entry = self.entries.get(pid)
        return 0.0 if entry is None else entry.privacy.clip_norm * entry.privacy.noise_multiplier
