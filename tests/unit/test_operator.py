"""The operator-signed registry without Kafka: which records are trusted, and what the audit
makes of a log whose registry was tampered with."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from fi_stream.admission import client_entry, participant_entry
from fi_stream.audit import AuditLog, Logged, Tombstone, audit
from fi_stream.errors import ConfigError
from fi_stream.operator import (
    entry_bytes,
    judge,
    load_operator_pubkey,
    registry_key,
    sign_entry,
    verify_entry,
)
from fi_stream.signing import generate_key, public_key_bytes
from fi_stream.testing import synthetic_log
from schemas import Budget, Participant, Privacy

OPERATOR = Ed25519PrivateKey.generate()
PUB = public_key_bytes(OPERATOR)


def entry(pid: str = "p1", at: int = 1000, key: Ed25519PrivateKey | None = None,
          active: bool = True) -> Participant:
    e = participant_entry(pid, public_key_bytes(key or Ed25519PrivateKey.generate()),
                          tasks=["digits"], budget=Budget(epsilon_max=1.0, delta=1e-5),
                          privacy=Privacy(clip_norm=1.0, noise_multiplier=1.0), at_ms=at)
    return e.model_copy(update={"active": active})


def test_judge_trusts_only_fresh_operator_signed_entries() -> None:
    signed = sign_entry(entry(), OPERATOR)
    assert judge(signed, "p1", None, PUB) == "trusted"
    assert judge(entry(), "p1", None, PUB) == "unsigned"
    assert judge(sign_entry(entry(), Ed25519PrivateKey.generate()), "p1", None, PUB) == "forged"
    assert judge(None, "p1", signed, PUB) == "bare_tombstone"
    assert judge(signed, "p2", None, PUB) == "key_mismatch"
    assert judge(signed, "p1", signed, PUB) == "stale"  # a replay of the same admission
    newer = sign_entry(entry(at=2000), OPERATOR)
    assert judge(signed, "p1", newer, PUB) == "stale"
    assert judge(newer, "p1", signed, PUB) == "trusted"
    assert judge(entry(), "p1", None, None) == "open"  # no operator: the open registry
    assert judge(None, "p1", None, None) == "open"


@given(field=st.sampled_from(["public_key", "tasks", "active", "registered_at_ms",
                              "participant_id", "budget"]))
def test_changing_any_field_breaks_the_signature(field: str) -> None:
    signed = sign_entry(entry(), OPERATOR)
    changed = {"public_key": b"\x01" * 32, "tasks": ["other"], "active": False,
               "registered_at_ms": 1, "participant_id": "p9",
               "budget": Budget(epsilon_max=99.0, delta=1e-5)}[field]
    assert verify_entry(signed, PUB)
    assert not verify_entry(signed.model_copy(update={field: changed}), PUB)


def test_clients_live_under_their_own_key_prefix() -> None:
    c = sign_entry(client_entry("alice", b"\x02" * 32, at_ms=5), OPERATOR)
    assert registry_key(c) == "client/alice"
    assert judge(c, "client/alice", None, PUB) == "trusted"
    assert judge(c, "alice", None, PUB) == "key_mismatch"  # not as a participant id
    assert b"operator_signature" not in entry_bytes(c)


def test_operator_key_from_setting_or_file(tmp_path: Path) -> None:
    b64 = base64.b64encode(PUB).decode()
    assert load_operator_pubkey(b64, None) == PUB
    (tmp_path / "op.pub").write_text(b64 + "\n")
    assert load_operator_pubkey(None, tmp_path / "op.pub") == PUB
    key = generate_key(tmp_path / "op.pem")
    assert load_operator_pubkey(None, tmp_path / "op.pem") == public_key_bytes(key)
    assert load_operator_pubkey(None, None) is None
    with pytest.raises(ConfigError, match="32 bytes"):
        load_operator_pubkey(base64.b64encode(b"short").decode(), None)


# -- the audit -------------------------------------------------------------------------------

def signed_log() -> AuditLog:
    """A faithful synthetic log whose registry the operator signed."""
    log = synthetic_log(queries=40, participants=3, partitions=2, batch=8,
                        window_results=20, seed=3).audit_log()
    log.registry = [Logged(sign_entry(p.event, OPERATOR), p.partition, p.offset)  # type: ignore[arg-type]
                    for p in log.registry]
    log.operator_pubkey = PUB
    return log


def test_a_signed_registry_audits_clean() -> None:
    report = audit(signed_log(), merit=False)
    assert report.ok, [d.line() for d in report.discrepancies]


def test_unsigned_forged_and_tombstoned_records_are_flagged() -> None:
    log = signed_log()
    n = len(log.registry)
    hijack = entry("p1", at=log.registry[0].event.registered_at_ms + 1)
    log.registry.append(Logged(hijack, 0, n))
    log.registry.append(Logged(sign_entry(entry("sybil"), Ed25519PrivateKey.generate()), 0,
                               n + 1))
    log.tombstones.append(Tombstone("p2", 0, n + 2))
    report = audit(log, merit=False)
    assert report.by_kind() == {"unsigned_registry_record": 2, "forged_registry_record": 1}
    # The refused records change nothing: every answer still verifies with its valid key.
    assert report.counts["participants"] == 3


def test_an_answer_signed_after_its_key_was_rotated_is_a_bad_signature() -> None:
    log = signed_log()
    i, p1 = next((i, p.event) for i, p in enumerate(log.registry)
                 if p.event.participant_id == "p1")
    start = p1.registered_at_ms
    early = p1.model_copy(update={"registered_at_ms": start - 60_000, "operator_signature": b""})
    log.registry[i] = Logged(sign_entry(early, OPERATOR), 0, log.registry[i].offset)
    rotated = p1.model_copy(update={"public_key": b"\x03" * 32,
                                    "registered_at_ms": start - 30_000,
                                    "operator_signature": b""})
    log.registry.append(Logged(sign_entry(rotated, OPERATOR), 0, len(log.registry)))
    report = audit(log, merit=False)
    bad = [d for d in report.discrepancies if d.kind == "bad_signature"]
    assert bad and {d.participant_id for d in bad} == {"p1"}
    assert set(report.by_kind()) == {"bad_signature"}
    # On an open registry, any key p1 ever registered would have been accepted.
    log.operator_pubkey = None
    assert "bad_signature" not in audit(log, merit=False).by_kind()


def test_a_participant_removed_before_it_answered_is_flagged() -> None:
    log = signed_log()
    i, p2 = next((i, p.event) for i, p in enumerate(log.registry)
                 if p.event.participant_id == "p2")
    early = p2.model_copy(update={"registered_at_ms": p2.registered_at_ms - 60_000,
                                  "operator_signature": b""})
    log.registry[i] = Logged(sign_entry(early, OPERATOR), 0, log.registry[i].offset)
    removal = p2.model_copy(update={"active": False, "registered_at_ms":
                                    p2.registered_at_ms - 30_000, "operator_signature": b""})
    log.registry.append(Logged(sign_entry(removal, OPERATOR), 0, len(log.registry)))
    report = audit(log, merit=False)
    assert {d.participant_id for d in report.discrepancies} == {"p2"}
    assert set(report.by_kind()) == {"bad_signature"}


def test_a_participant_refuses_to_run_looser_than_admitted() -> None:
    from consumers.enrolment import check_admitted as _check_admitted

    admitted = entry()
    _check_admitted(admitted, admitted)
    assert admitted.budget is not None
    looser = admitted.model_copy(update={"budget": Budget(epsilon_max=2.0, delta=1e-5)})
    with pytest.raises(ConfigError, match="budget"):
        _check_admitted(admitted, looser)
    tighter = admitted.model_copy(update={"budget": Budget(epsilon_max=0.5, delta=1e-5)})
    _check_admitted(admitted, tighter)
    other = admitted.model_copy(update={"privacy": Privacy(clip_norm=2.0, noise_multiplier=1.0)})
    with pytest.raises(ConfigError, match="privacy"):
        _check_admitted(admitted, other)
