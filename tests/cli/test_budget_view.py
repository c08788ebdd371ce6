"""`participant budget` tells answered from reserved, says whether the participant runs,
and gives ε of the budget (issue 15)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from fi_stream.ledger import LEDGER_FILE, PrivacyLedger
from fi_stream.privacy import Mechanism, PrivacyBudget
from fi_stream_cli.budget import LedgerReading, counted_answers, describe, read_ledger

BUDGET = PrivacyBudget(epsilon_max=1e6, delta=1e-5)
GAUSSIAN = Mechanism(name="gaussian", clip_norm=1.0, noise_multiplier=0.3)


def test_a_running_participant_then_a_clean_stop(tmp_path: Path) -> None:
    ledger = PrivacyLedger.open(tmp_path / LEDGER_FILE, BUDGET, GAUSSIAN, reserve_ahead=100)
    ledger.lock()
    assert ledger.reserve(7) == 7
    running = read_ledger(tmp_path)
    assert running == LedgerReading(counted=107, reserved_ahead=100,
                                    epsilon=running.epsilon if running else None,
                                    holder=os.getpid())
    text = describe("p0", running, epsilon_max=1e6, delta=1e-5, answers_left=10)
    assert f"running (pid {os.getpid()}): answered ≥ 7" in text
    assert "100 more reserved ahead; 107 counted as spent until it stops cleanly" in text
    assert "of budget ε_max = 1e+06 at δ = 1e-05 (" in text and " %)" in text
    ledger.close()
    stopped = read_ledger(tmp_path)
    assert stopped is not None and (stopped.answered, stopped.reserved_ahead,
                                    stopped.holder) == (7, 0, None)
    assert describe("p0", stopped, epsilon_max=1e6, delta=1e-5, answers_left=10).startswith(
        "p0: 7 answers given, none reserved; ε = ")


def test_a_crashed_run_keeps_its_reservation_counted(tmp_path: Path) -> None:
    ledger = PrivacyLedger.open(tmp_path / LEDGER_FILE, BUDGET, GAUSSIAN, reserve_ahead=100)
    ledger.reserve(3)  # no close(): as after a crash
    text = describe("p0", read_ledger(tmp_path), epsilon_max=1e6, delta=1e-5, answers_left=1)
    assert "3 answered and 100 reserved ahead by a run that did not stop cleanly" in text
    assert "all 103 count as spent" in text


def test_files_of_other_formats_and_no_file(tmp_path: Path) -> None:
    assert read_ledger(tmp_path) is None
    assert "no answers yet" in describe("p0", None, epsilon_max=1, delta=1e-5,
                                        answers_left=5)
    (tmp_path / LEDGER_FILE).write_text(json.dumps({"answers": 1025, "epsilon": 3.0}))
    old = read_ledger(tmp_path)
    assert old is not None and old.answered is None
    assert "1,025 answers counted as spent (answered or reserved" in describe(
        "p0", old, epsilon_max=6, delta=1e-5, answers_left=0)
    assert counted_answers({"spend": [{"answers": 4}, {"answers": 5}]}) == 9
