"""What the demo prints: a story with units, budgets and what each figure measures; its
log lines go to the run's folder (issue 15)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import structlog
from rich.console import Console

from fi_stream.settings import load_settings
from fi_stream_cli.demo import Report, _log_to, _print_report
from schemas import Incentive, IncentiveCounts, Result, Window, WindowRef


def result(qid: str, status: str, prediction: int) -> Result:
    return Result(query_id=qid, task="digits", status=status, prediction=prediction,  # type: ignore[arg-type]
                  strategy="soft_vote", quorum=1, created_at_ms=0, deadline_ms=1,
                  completed_at_ms=1, window=WindowRef(partition=0, seq=0))


def incentive(pid: str, method: str, reward: float) -> Incentive:
    return Incentive(participant_id=pid, method=method, score=0.5, reward=reward, budget=100,
                     counts=IncentiveCounts(included=2),
                     window=Window(partition=0, seq=0, results=2, first_completed_at_ms=0,
                                   last_completed_at_ms=1))


def test_the_report_names_units_budgets_and_what_latency_measures() -> None:
    console = Console(record=True, width=200)
    report = Report(labels={"a": 1, "b": 2}, results={"a": result("a", "complete", 1),
                                                      "b": result("b", "partial", 3)},
                    latencies_ms=[100.0, 300.0], wall_s=1.0)
    settings = load_settings(None)
    _print_report(console, report, {"p1": 0.9, "p2": 0.8}, {"p1": 0.85, "p2": 0.7},
                  [incentive("p1", "loo_agreement", 60.0), incentive("p2", "loo_agreement", 40.0),
                   incentive("p1", "shapley", 70.0), incentive("p2", "shapley", 30.0)],
                  settings, ["p1", "p2"])
    text = console.export_text()
    assert "end-to-end latency, query created → result received by the client: mean 200.0 ms" \
        in text
    assert "2 queries (1 complete, 1 partial)" in text
    assert "points of 100" in text and "splits a budget of 100" in text
    assert "{'complete'" not in text  # no Python dict for people to read


def test_the_demo_logs_to_its_run_folder_not_the_terminal(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = structlog.get_config()  # the session's set-up, whatever stream it writes to
    try:
        _log_to(tmp_path / "logs" / "demo.log", "INFO")
        structlog.get_logger("x").warning("query_rejected", query_id="q1")
    finally:
        structlog.configure(**before)
        logging.getLogger().setLevel(logging.WARNING)
    assert "query_rejected" not in capsys.readouterr().err
    line = (tmp_path / "logs" / "demo.log").read_text()
    assert '"event": "query_rejected"' in line and '"query_id": "q1"' in line
