"""Every failure of the issue's list, through the real `fi-stream` in a subprocess: one line
on stderr that names the fix, exit 2 (usage/config) or 1 (runtime), no traceback.

Kafka cases use real ports: one with nothing listening, one where a plain TCP server
accepts and never answers, and (marked kafka) the shared test broker for what needs one.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def fi(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
       timeout: float = 120) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FI_")}
    base["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "fi_stream_cli", *args],
                          env={**base, **(env or {})}, cwd=cwd or ROOT, capture_output=True,
                          text=True, timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """The failure's line: the last of stderr, prefixed `error: `, and no traceback."""
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines, proc
    line = lines[-1]
    assert line.startswith("error: "), proc.stderr
    assert sum(x.startswith("error: ") for x in lines) == 1, proc.stderr
    for needle in needles:
        assert needle in line, line
    return line


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never says a word (not Kafka)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    yield int(server.getsockname()[1])
    server.close()
    for c in held:
        c.close()


# -- Kafka unreachable ----------------------------------------------------------------------------

def test_no_broker_on_the_port_is_one_line_exit_1() -> None:
    """A service waits for Kafka (issue 12): the one line comes once its retries give up."""
    port = free_port()
    proc = fi("aggregator", "run", env={"FI_KAFKA__BOOTSTRAP": f"127.0.0.1:{port}",
                                        "FI_KAFKA__CONNECT_TIMEOUT_S": "3",
                                        "FI_RETRY__GIVE_UP_S": "1"})
    one_line_error(proc, 1, f"cannot reach Kafka at 127.0.0.1:{port}", "within 3 s",
                   "FI_KAFKA__BOOTSTRAP")


def test_local_broker_not_running_names_kafka_up() -> None:
    proc = fi("query", env={"FI_KAFKA__LOCAL_PORT": str(free_port()),
                            "FI_KAFKA__CONNECT_TIMEOUT_S": "3"})
    one_line_error(proc, 1, "cannot reach Kafka", "fi-stream kafka up")


def test_a_port_that_is_not_kafka_fails_within_the_connect_timeout(silent_server: int) -> None:
    proc = fi("participant", "budget", "--id", "x", env={})  # warm the import cache
    import time

    started = time.monotonic()
    proc = fi("merit", env={"FI_KAFKA__BOOTSTRAP": f"127.0.0.1:{silent_server}",
                            "FI_KAFKA__CONNECT_TIMEOUT_S": "2", "FI_RETRY__GIVE_UP_S": "1"})
    one_line_error(proc, 1, "within 2 s", "connected, but no Kafka answer")
    assert time.monotonic() - started < 30


# -- settings ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "needle"), [
    ("kafka = [\n", "is not valid TOML"),
    ("[kafka]\npartitons = 3\n", "kafka.partitons: unknown setting"),
    ('[kafka]\npartitions = "many"\n', "kafka.partitions: Input should be a valid integer"),
    ('[aggregator]\nstrategy = "best_vote"\n', "unknown strategy 'best_vote'"),
])
def test_bad_config_file_is_one_line_exit_2(tmp_path: Path, text: str, needle: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(text)
    one_line_error(fi("--config", str(config), "topics", "create"), 2, needle)


@pytest.mark.parametrize(("env", "needle"), [
    ({"FI_KAFKA__PARTITONS": "3"}, "FI_KAFKA__PARTITONS: unknown setting"),
    ({"FI_KAFKA__PARTITIONS": "many"}, "FI_KAFKA__PARTITIONS: Input should be a valid integer"),
    ({"FI_AGGREGATOR__INCENTIVE_METHOD": "shapely"}, "unknown incentive method 'shapely'"),
    ({"FI_AGGREGATOR__STRATEGY": "best_vote"}, "unknown strategy 'best_vote'"),
    ({"FI_PARTICIPANT__DEVICE": "gpu0"}, "FI_PARTICIPANT__DEVICE"),
    ({"FI_PARTICIPANT__PRECISION": "fp8"}, "FI_PARTICIPANT__PRECISION"),
    ({"FI_LOG_LEVEL": "LOUD"}, "FI_LOG_LEVEL"),
])
def test_bad_environment_is_one_line_exit_2(env: dict[str, str], needle: str) -> None:
    one_line_error(fi("topics", "create", env=env), 2, "invalid environment", needle)


# -- arguments -----------------------------------------------------------------------------------

def test_unknown_log_level_is_rejected() -> None:
    one_line_error(fi("--log-level", "LOUD", "query"), 2, "'LOUD' is not one of")


def test_test_index_past_the_split() -> None:
    one_line_error(fi("query", "--test-index", "99999"), 2, "--test-index", "past the test split")


def test_unknown_strategy_is_rejected_before_anything_starts() -> None:
    """The aggregator's own setting; a query's --strategy goes to the aggregator, which
    rejects a name it does not run (tests/integration/test_unknown_strategy.py)."""
    one_line_error(fi("aggregator", "run", "--strategy", "best_vote"), 2,
                   "'best_vote' is not one of", "soft_vote")


def test_budget_of_an_unknown_participant(tmp_path: Path) -> None:
    one_line_error(fi("participant", "budget", "--id", "nosuch", cwd=tmp_path), 2,
                   "no participant 'nosuch'", "participant train")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    proc = fi("--log-level", "DEBUG", "participant", "budget", "--id", "nosuch", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" in proc.stderr


def test_help_lists_choices_and_version() -> None:
    proc = fi("aggregator", "run", "--help", env={"COLUMNS": "200"})
    assert proc.returncode == 0 and "soft_vote" in proc.stdout and "median" in proc.stdout
    version = fi("--version")
    assert version.returncode == 0 and version.stdout.startswith("fi-stream ")


# -- with the shared broker ------------------------------------------------------------------------

@pytest.mark.kafka
def test_metrics_port_in_use(kafka_bootstrap: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = fi("aggregator", "run", "--metrics-port", str(port),
                  env={"FI_KAFKA__BOOTSTRAP": kafka_bootstrap,
                       "FI_KAFKA__TOPIC_PREFIX": f"t-{uuid.uuid4().hex[:8]}."})
    one_line_error(proc, 2, f"metrics port 127.0.0.1:{port} is already in use", "--metrics-port")


@pytest.mark.kafka
def test_audit_of_empty_topics_fails_unless_allowed(kafka_bootstrap: str) -> None:
    env = {"FI_KAFKA__BOOTSTRAP": kafka_bootstrap,
           "FI_KAFKA__TOPIC_PREFIX": f"t-{uuid.uuid4().hex[:8]}.", "FI_KAFKA__PARTITIONS": "1"}
    assert fi("topics", "create", env=env).returncode == 0
    one_line_error(fi("audit", env=env), 1, "nothing to audit", "--allow-empty")
    assert fi("audit", "--allow-empty", env=env).returncode == 0


@pytest.mark.kafka
def test_status_json_on_an_empty_federation(kafka_bootstrap: str) -> None:
    import json

    env = {"FI_KAFKA__BOOTSTRAP": kafka_bootstrap,
           "FI_KAFKA__TOPIC_PREFIX": f"t-{uuid.uuid4().hex[:8]}.", "FI_KAFKA__PARTITIONS": "1"}
    assert fi("topics", "create", env=env).returncode == 0
    proc = fi("status", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["participants"] == [] and doc["dead_letters"] == 0
    assert doc["aggregators"]["members"] == 0
