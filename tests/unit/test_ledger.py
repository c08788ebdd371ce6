"""The privacy ledger: never grants past the budget, and the file always bounds what was
granted, so neither a restart nor a crash can reset or undercount the spend."""

from __future__ import annotations

import json
import math
from pathlib import Path

import dp_accounting
import pytest
from dp_accounting.rdp import RdpAccountant
from hypothesis import given, settings
from hypothesis import strategies as st

from fi_stream.errors import ConfigError
from fi_stream.ledger import LEDGER_FILE, PrivacyLedger
from fi_stream.privacy import Mechanism, PrivacyBudget, epsilon, epsilon_spent, max_answers

SIGMA, DELTA = 0.3, 1e-5
MECH = Mechanism(noise_multiplier=SIGMA)


def _on_disk(path: Path, mechanism: Mechanism = MECH) -> int:
    state = json.loads(path.read_text())
    assert state["format"] == 2
    return sum(int(e["answers"]) for e in state["spend"]
               if e["mechanism"] == mechanism.name
               and e["noise_multiplier"] == mechanism.noise_multiplier
               and e["teachers"] == mechanism.teachers)


@settings(max_examples=30, deadline=None)
@given(cap=st.integers(1, 5_000), ahead=st.integers(0, 2_000),
       wants=st.lists(st.integers(0, 400), min_size=1, max_size=30))
def test_grants_stay_within_budget_and_the_file_bounds_them(
        tmp_path_factory: object, cap: int, ahead: int, wants: list[int]) -> None:
    path = tmp_path_factory.mktemp("ledger") / LEDGER_FILE  # type: ignore[attr-defined]
    budget = PrivacyBudget(epsilon_max=epsilon_spent(cap, MECH, DELTA), delta=DELTA)
    cap = max_answers(budget, MECH)  # ε is not strictly monotone in n
    ledger = PrivacyLedger.open(path, budget, MECH, ahead)
    granted = 0
    for want in wants:
        quiet = not ledger.must_persist(want)  # then the participant reserves on its loop
        before = path.stat().st_ino if path.exists() else None
        got = ledger.reserve(want)
        if quiet:
            assert (path.stat().st_ino if path.exists() else None) == before, "it wrote"
        assert 0 <= got <= want
        granted += got
        assert ledger.answers == granted <= cap
        if granted:
            assert granted <= _on_disk(path) <= cap  # persisted before it is returned
            assert _on_disk(path) - granted <= min(ahead, cap // 100)
    # A restart counts the whole reservation as spent and still never passes the cap.
    again = PrivacyLedger.open(path, budget, MECH, ahead) if granted else ledger
    assert again.answers >= granted
    assert again.answers + again.reserve(cap) <= cap


def test_a_large_budget_is_written_once_per_block(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    ledger = PrivacyLedger.open(path, PrivacyBudget(epsilon_max=1e6, delta=DELTA), MECH, 100)
    writes = 0
    original = ledger._save

    def counting() -> None:
        nonlocal writes
        writes += 1
        original()

    ledger._save = counting  # type: ignore[method-assign]
    for _ in range(50):
        assert ledger.reserve(10) == 10
    assert writes == 5 and _on_disk(path) == 450 + 100  # written at 10, 120, …, 450


def test_a_clean_close_releases_the_reservation_and_a_crash_loses_one_block(
        tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    budget = PrivacyBudget(epsilon_max=1e6, delta=DELTA)
    ledger = PrivacyLedger.open(path, budget, MECH, 1024)
    ledger.lock()
    assert ledger.reserve(10) == 10
    ahead = min(1024, max_answers(budget, MECH) // 100)  # capped at 1 % of the budget
    assert _on_disk(path) == 10 + ahead  # running: the block ahead counts
    ledger.close()
    assert _on_disk(path) == 10  # clean stop: exactly what was answered
    crashed = PrivacyLedger.open(path, budget, MECH, 1024)
    crashed.reserve(5)  # then the process dies without close()
    assert PrivacyLedger.open(path, budget, MECH, 1024).answers == 15 + ahead


def test_a_second_process_cannot_share_the_ledger(tmp_path: Path) -> None:
    import subprocess
    import sys

    import pytest

    from fi_stream.errors import LedgerLockedError

    path = tmp_path / LEDGER_FILE
    budget = PrivacyBudget(epsilon_max=1e6, delta=DELTA)
    first = PrivacyLedger.open(path, budget, MECH)
    first.lock()
    code = (f"from fi_stream.ledger import PrivacyLedger\nfrom fi_stream.privacy import "
            f"PrivacyBudget, Mechanism\nfrom pathlib import Path\nPrivacyLedger.open("
            f"Path({str(path)!r}), PrivacyBudget(epsilon_max=1e6, delta={DELTA}), "
            f"Mechanism(noise_multiplier={SIGMA})).lock()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0 and "LedgerLockedError" in proc.stderr
    assert "one process per participant id" in proc.stderr
    with pytest.raises(LedgerLockedError):  # flock is per open file: same process too
        PrivacyLedger.open(path, budget, MECH).lock()
    first.close()
    PrivacyLedger.open(path, budget, MECH).lock()  # free again


def _dp_accounting_epsilon(multiplier: float, answers: int) -> float:
    accountant = RdpAccountant()
    accountant.compose(dp_accounting.SelfComposedDpEvent(
        dp_accounting.GaussianDpEvent(multiplier), answers))
    return float(accountant.get_epsilon(DELTA))


def test_an_old_format_ledger_is_recomputed_with_the_corrected_sensitivity(
        tmp_path: Path) -> None:
    """Format 1 (one σ, answers, and an ε priced at sensitivity C) is re-priced at √2·C
    when opened, rewritten in format 2 at once, and the old ε kept only as history."""
    path = tmp_path / LEDGER_FILE
    old_epsilon = _dp_accounting_epsilon(1.0, 1000)  # what the old code wrote: ≈ 655
    path.write_text(json.dumps({"answers": 1000, "noise_multiplier": 1.0, "delta": DELTA,
                                "epsilon_max": 1e6, "epsilon": old_epsilon}))
    budget = PrivacyBudget(epsilon_max=1e6, delta=DELTA)
    ledger = PrivacyLedger.open(path, budget, Mechanism(noise_multiplier=1.0))
    assert ledger.answers == 1000
    assert ledger.epsilon == pytest.approx(_dp_accounting_epsilon(1 / math.sqrt(2), 1000))
    assert ledger.epsilon == pytest.approx(1212, abs=1) and old_epsilon < 656
    state = json.loads(path.read_text())
    assert state["format"] == 2 and state["epsilon"] == pytest.approx(ledger.epsilon)
    assert state["recomputed_from"]["epsilon"] == old_epsilon
    # Reopened (now format 2): same spend, and a new mechanism composes with the old one.
    teachers = Mechanism(name="teachers", noise_multiplier=0.5, teachers=8)
    again = PrivacyLedger.open(path, budget, teachers)
    assert again.answers == 0 and again.epsilon == pytest.approx(ledger.epsilon)
    assert again.reserve(10) == 10
    assert again.epsilon == pytest.approx(
        epsilon({Mechanism(noise_multiplier=1.0): 1000, teachers: 10}, DELTA))


def test_an_unknown_ledger_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    path.write_text(json.dumps({"format": 99, "spend": []}))
    with pytest.raises(ConfigError, match="format"):
        PrivacyLedger.open(path, PrivacyBudget(epsilon_max=1.0, delta=DELTA), MECH)


def test_reused_answers_are_counted_apart_and_cost_nothing(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    ledger = PrivacyLedger.open(path, PrivacyBudget(epsilon_max=1e6, delta=DELTA), MECH, 0)
    ledger.reserve(3)
    spent = ledger.epsilon
    ledger.count_reused(5)
    ledger.close()
    assert ledger.epsilon == spent
    state = json.loads(path.read_text())
    assert state["reused"] == 5 and _on_disk(path) == 3
