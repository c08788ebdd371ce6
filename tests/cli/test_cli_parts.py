"""The pieces behind `fi-stream`'s one-line failures and quiet logs."""

from __future__ import annotations

import logging

import pytest

from fi_stream.errors import ConfigError, FiStreamError, KafkaUnreachableError
from fi_stream.logging import OncePerCause
from fi_stream.settings import load_settings
from fi_stream_cli.failures import debugging, explain


def test_exit_codes_config_2_runtime_1() -> None:
    assert explain(ConfigError("x")) == ("x", 2)
    assert explain(KafkaUnreachableError("y")) == ("y", 1)
    assert explain(FiStreamError("z"))[1] == 1
    assert explain(RuntimeError("boom"))[0].startswith("unexpected RuntimeError: boom")


def test_debugging_is_read_from_argv_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FI_LOG_LEVEL", raising=False)
    assert debugging(["--log-level", "debug", "query"])
    assert debugging(["--log-level=DEBUG"])
    assert not debugging(["--log-level", "INFO"])
    monkeypatch.setenv("FI_LOG_LEVEL", "DEBUG")
    assert debugging([])


def _record(msg: str) -> logging.LogRecord:
    return logging.LogRecord("aiokafka", logging.ERROR, __file__, 1, msg, ("127.0.0.1:1",), None)


def test_once_per_cause_counts_the_repeats_it_swallows() -> None:
    now = [0.0]
    f = OncePerCause(window_s=60, clock=lambda: now[0])
    assert f.filter(_record("Unable connect to %s"))
    for _ in range(5):
        now[0] += 1
        assert not f.filter(_record("Unable connect to %s"))
    assert f.filter(_record("another cause %s"))  # a different cause passes
    now[0] += 60
    again = _record("Unable connect to %s")
    assert f.filter(again) and again.repeats == 5


def test_names_are_checked_when_settings_load() -> None:
    with pytest.raises(ConfigError, match="unknown strategy 'best_vote'; choose one of"):
        load_settings(aggregator={"strategy": "best_vote"})
    with pytest.raises(ConfigError, match="unknown incentive method"):
        load_settings(aggregator={"incentive_method": "shapely"})
    with pytest.raises(ConfigError, match="--device"):
        load_settings(participant={"device": "gpu"})
    assert load_settings(participant={"device": "cuda:1"}).participant.device == "cuda:1"
    assert load_settings(log_level="debug").log_level == "DEBUG"


def test_bench_e2e_ratios_pair_the_runs_it_has() -> None:
    from fi_stream_cli.bench import ratios

    out = {"batched_max": {"queries_per_s": 1200.0}, "batched_half_rate": {"queries_per_s": 1.0},
           "block1_max": {"queries_per_s": 400.0}, "naive_max": {"queries_per_s": 100.0}}
    assert ratios(out) == {"block_ratio": 3.0, "block1_over_naive": 4.0,
                           "throughput_ratio": 12.0}
    # --rate R: the runs are keyed without _max; a missing run leaves its ratios out.
    got = ratios({"batched": {"queries_per_s": 50.0}, "control_max": {"queries_per_s": 25.0}})
    assert got == {"batching_ratio": 2.0}


def test_bench_e2e_help_documents_the_json_keys() -> None:
    from typer.testing import CliRunner

    from fi_stream_cli.main import app

    text = CliRunner().invoke(app, ["bench", "e2e", "--help"], env={"COLUMNS": "200"}).output
    for key in ("batched_max", "batched_half_rate", "block1_max", "block1_half_rate",
                "block_ratio", "block1_over_naive", "--block-one"):
        assert key in text


def test_load_generator_rows_cycle_through_the_inputs() -> None:
    import numpy as np

    from producers.load import _rows

    xs = np.arange(10)[:, None]
    assert _rows(xs, 13, 4).ravel().tolist() == [3, 4, 5, 6]
    assert _rows(xs, 18, 4).ravel().tolist() == [8, 9, 0, 1]
