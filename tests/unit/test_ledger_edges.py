"""The privacy ledger's edges, pinned one by one (issue 18: each test kills a mutmut survivor).

What the file says after a format-1 recompute, a teachers mechanism's round trip, the
reuse count across a restart, the lock's pid, and `lock_holder`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from fi_stream.errors import ConfigError, LedgerLockedError
from fi_stream.ledger import LEDGER_FILE, PrivacyLedger, lock_holder
from fi_stream.privacy import Mechanism, PrivacyBudget, epsilon, max_answers

DELTA = 1e-5
BUDGET = PrivacyBudget(epsilon_max=1e6, delta=DELTA)
MECH = Mechanism(noise_multiplier=0.3)
TEACHERS = Mechanism(name="teachers", noise_multiplier=0.5, teachers=8)
CLIPPED = Mechanism(clip_norm=2.0, noise_multiplier=0.3)


def _spend(path: Path) -> list[dict[str, object]]:
    spend: list[dict[str, object]] = json.loads(path.read_text())["spend"]
    return spend


def test_a_format_1_file_is_recomputed_and_says_so(tmp_path: Path) -> None:
    """Opened with another σ than the old file's: before, the save inside the recompute
    read this run's (missing) entry and `open` died with a KeyError."""
    path = tmp_path / LEDGER_FILE
    path.write_text(json.dumps({"answers": 40, "noise_multiplier": 2.0, "delta": DELTA,
                                "epsilon": 1.5}))
    with capture_logs() as logs:
        ledger = PrivacyLedger.open(path, BUDGET, MECH)
    old = Mechanism(name="gaussian", clip_norm=1.0, noise_multiplier=2.0)
    now = epsilon({old: 40}, DELTA)
    assert ledger.recomputed_from == {"format": 1, "epsilon": 1.5, "delta": DELTA,
                                      "answers": 40, "noise_multiplier": 2.0}
    assert logs == [{"event": "privacy_ledger_recomputed", "log_level": "warning",
                     "path": str(path), "old_epsilon": 1.5, "epsilon": now, "answers": 40,
                     "reason": "format 1 assumed sensitivity C; gaussian is √2·C"}]
    state = json.loads(path.read_text())
    assert state["spend"] == [{"mechanism": "gaussian", "noise_multiplier": 2.0,
                               "clip_norm": 1.0, "teachers": None, "answers": 40}]
    assert state["reserved_ahead"] == 0 and state["delta"] == DELTA
    assert state["epsilon_max"] == 1e6 and state["recomputed_from"] == ledger.recomputed_from
    assert ledger.reserved == 0 and ledger.answers == 0
    again = PrivacyLedger.open(path, BUDGET, MECH)
    assert again.recomputed_from == ledger.recomputed_from and again.epsilon == ledger.epsilon


def test_a_file_with_a_format_but_no_known_one_is_refused_even_with_a_sigma(
        tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    path.write_text(json.dumps({"format": 3, "answers": 4, "noise_multiplier": 1.0}))
    with pytest.raises(ConfigError, match="ledger format 3"):
        PrivacyLedger.open(path, BUDGET, MECH)


def test_every_mechanism_field_and_the_reuse_count_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    first = PrivacyLedger.open(path, BUDGET, TEACHERS, reserve_ahead=0)
    assert first.reserve(7) == 7
    first.count_reused(2)
    first.count_reused(3)
    first.close()
    assert json.loads(path.read_text())["reused"] == 5
    second = PrivacyLedger.open(path, BUDGET, CLIPPED, reserve_ahead=0)
    assert second.spend == {TEACHERS: 7, CLIPPED: 0} and second.reused == 5
    assert second.reserve(4) == 4
    second.close()
    third = PrivacyLedger.open(path, BUDGET, TEACHERS)
    assert third.spend == {TEACHERS: 7, CLIPPED: 4} and third.answers == 7
    # The file lists mechanisms in one stable order (by repr), whatever the dict order.
    names = [e["mechanism"] for e in _spend(path)]
    assert names == sorted(names, key=lambda n: repr(
        TEACHERS if n == "teachers" else CLIPPED))


def test_a_file_without_a_reuse_count_reads_as_zero(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    path.write_text(json.dumps({"format": 2, "spend": [
        {"mechanism": "gaussian", "noise_multiplier": 0.3, "clip_norm": 1.0, "answers": 3}]}))
    ledger = PrivacyLedger.open(path, BUDGET, MECH)
    assert ledger.reused == 0 and ledger.answers == 3 and ledger.recomputed_from is None


def test_the_default_block_is_1024_answers_and_must_persist_is_strict(tmp_path: Path) -> None:
    quiet = Mechanism(noise_multiplier=3.0)  # 8e6 answers fit: the block is the 1024 cap
    ledger = PrivacyLedger.open(tmp_path / LEDGER_FILE, BUDGET, quiet)
    assert ledger.reserve_ahead == 1024
    assert ledger.reserve(1) == 1
    state = json.loads((tmp_path / LEDGER_FILE).read_text())
    assert state["reserved_ahead"] == ledger.reserved - 1 == 1024
    assert not ledger.must_persist(ledger.reserved - ledger.answers)
    assert ledger.must_persist(ledger.reserved - ledger.answers + 1)


def test_a_small_budget_reserves_a_whole_number_one_percent_ahead(tmp_path: Path) -> None:
    budget = PrivacyBudget(epsilon_max=20.0, delta=DELTA)
    mech = Mechanism(noise_multiplier=10.0)
    cap = max_answers(budget, mech, {})
    assert 100 < cap < 1024 * 100 and cap % 100  # so cap / 100 is not a whole number
    ledger = PrivacyLedger.open(tmp_path / LEDGER_FILE, budget, mech)
    ledger.reserve(1)
    assert ledger.reserved == 1 + cap // 100
    assert isinstance(json.loads((tmp_path / LEDGER_FILE).read_text())["spend"][0]["answers"],
                      int)


def test_a_clean_close_with_nothing_ahead_does_not_rewrite(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    ledger = PrivacyLedger.open(path, BUDGET, MECH, reserve_ahead=0)
    ledger.reserve(2)
    path.write_text("sentinel")
    ledger.close()
    assert path.read_text() == "sentinel"


def test_the_lock_names_its_pid_and_lock_holder_finds_it(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    assert lock_holder(path) is None  # no lock file
    ledger = PrivacyLedger.open(path, BUDGET, MECH)
    ledger.lock()
    assert (tmp_path / "privacy_ledger.lock").read_text() == str(os.getpid())
    assert lock_holder(path) == os.getpid()
    with pytest.raises(LedgerLockedError, match=rf"^{path} is in use by pid {os.getpid()}: one"
                       r" process per participant id; stop the other one first$"):
        PrivacyLedger.open(path, BUDGET, MECH).lock()
    ledger.close()
    assert ledger._lock is None
    assert lock_holder(path) is None  # free: looked at, not kept
    ledger.lock()
    ledger.close()


def test_a_lock_file_without_a_pid(tmp_path: Path) -> None:
    import fcntl
    path = tmp_path / LEDGER_FILE
    with (tmp_path / "privacy_ledger.lock").open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert lock_holder(path) == -1
        with pytest.raises(LedgerLockedError, match="in use by pid another process"):
            PrivacyLedger.open(path, BUDGET, MECH).lock()


def test_the_file_is_indented_and_replaced_atomically(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    ledger = PrivacyLedger.open(path, BUDGET, MECH)
    ledger.reserve(1)
    text = path.read_text()
    assert text == json.dumps(json.loads(text), indent=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [LEDGER_FILE]
