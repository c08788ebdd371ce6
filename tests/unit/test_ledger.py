"""The privacy ledger: never grants past the budget, and the file always bounds what was
granted, so neither a restart nor a crash can reset or undercount the spend."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from fi_stream.ledger import LEDGER_FILE, PrivacyLedger
from fi_stream.privacy import PrivacyBudget, epsilon_spent, max_answers

SIGMA, DELTA = 0.3, 1e-5


def _on_disk(path: Path) -> int:
    return int(json.loads(path.read_text())["answers"])


@settings(max_examples=30, deadline=None)
@given(cap=st.integers(1, 5_000), ahead=st.integers(0, 2_000),
       wants=st.lists(st.integers(0, 400), min_size=1, max_size=30))
def test_grants_stay_within_budget_and_the_file_bounds_them(
        tmp_path_factory: object, cap: int, ahead: int, wants: list[int]) -> None:
    path = tmp_path_factory.mktemp("ledger") / LEDGER_FILE  # type: ignore[attr-defined]
    budget = PrivacyBudget(epsilon_max=epsilon_spent(cap, SIGMA, DELTA), delta=DELTA)
    cap = max_answers(budget.epsilon_max, DELTA, SIGMA)  # ε is not strictly monotone in n
    ledger = PrivacyLedger.open(path, budget, SIGMA, ahead)
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
    again = PrivacyLedger.open(path, budget, SIGMA, ahead) if granted else ledger
    assert again.answers >= granted
    assert again.answers + again.reserve(cap) <= cap


def test_a_large_budget_is_written_once_per_block(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    ledger = PrivacyLedger.open(path, PrivacyBudget(epsilon_max=1e6, delta=DELTA), SIGMA, 100)
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
    ledger = PrivacyLedger.open(path, budget, SIGMA, 1024)
    ledger.lock()
    assert ledger.reserve(10) == 10
    assert _on_disk(path) == 10 + 1024  # running: the block ahead counts
    ledger.close()
    assert _on_disk(path) == 10  # clean stop: exactly what was answered
    crashed = PrivacyLedger.open(path, budget, SIGMA, 1024)
    crashed.reserve(5)  # then the process dies without close()
    assert PrivacyLedger.open(path, budget, SIGMA, 1024).answers == 15 + 1024


def test_a_second_process_cannot_share_the_ledger(tmp_path: Path) -> None:
    import subprocess
    import sys

    import pytest

    from fi_stream.errors import LedgerLockedError

    path = tmp_path / LEDGER_FILE
    budget = PrivacyBudget(epsilon_max=1e6, delta=DELTA)
    first = PrivacyLedger.open(path, budget, SIGMA)
    first.lock()
    code = (f"from fi_stream.ledger import PrivacyLedger\nfrom fi_stream.privacy import "
            f"PrivacyBudget\nfrom pathlib import Path\nPrivacyLedger.open(Path({str(path)!r}),"
            f" PrivacyBudget(epsilon_max=1e6, delta={DELTA}), {SIGMA}).lock()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0 and "LedgerLockedError" in proc.stderr
    assert "one process per participant id" in proc.stderr
    with pytest.raises(LedgerLockedError):  # flock is per open file: same process too
        PrivacyLedger.open(path, budget, SIGMA).lock()
    first.close()
    PrivacyLedger.open(path, budget, SIGMA).lock()  # free again
