"""Every `fi-stream` command but `audit` (tests/integration/test_audit.py) runs (issue 18).

Commands that serve until a signal (`participant run`, `aggregator run`) are run and
killed in tests/fault; `merit` is started and stopped here. `kafka up`/`down`, `demo` and
`bench …` start brokers or run for minutes: their smoke test is `--help` (the option
parsing and imports), and their numbers are checked by their JSON under benchmarks/.
"""

from __future__ import annotations

import asyncio
import json
import signal
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from typer.main import get_command
from typer.testing import CliRunner

from fi_stream.service_env import service_env
from fi_stream.settings import Settings
from fi_stream_cli.main import app
from tests.integration.harness import federation

runner = CliRunner()


@pytest.fixture(autouse=True)
def _logging_back_on_stderr() -> Iterator[None]:
    """A CLI command configures structlog on CliRunner's stderr, closed after the call."""
    before = structlog.get_config()
    yield
    structlog.configure(**before)


def _commands() -> list[list[str]]:
    out: list[list[str]] = []
    root = get_command(app)

    def walk(cmd: object, path: list[str]) -> None:
        sub = getattr(cmd, "commands", None)
        if sub:
            for name, child in sub.items():
                walk(child, [*path, name])
        else:
            out.append(path)

    walk(root, [])
    return out


def test_every_command_is_listed_and_parses_help() -> None:
    commands = _commands()
    assert {" ".join(c) for c in commands} >= {
        "kafka up", "kafka down", "kafka status", "topics create", "keys generate",
        "participant train", "participant run", "participant budget", "aggregator run",
        "merit", "query", "demo", "bench engine", "bench emit", "bench e2e", "bench audit",
        "audit", "replay", "status", "topics tail", "privacy epsilon",
        # Both experiments: a second `experiment` group once hid `experiment privacy`.
        "experiment privacy", "experiment incentives"}
    for command in commands:
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0, (command, result.output)
        assert "Usage" in result.output


def test_keys_generate_writes_a_private_key_once(tmp_path: Path) -> None:
    out = tmp_path / "k.pem"
    first = runner.invoke(app, ["keys", "generate", "--out", str(out)])
    assert first.exit_code == 0 and len(first.stdout.strip()) == 44  # 32 bytes, base64
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert runner.invoke(app, ["keys", "generate", "--out", str(out)]).exit_code == 2


def test_train_then_budget(tmp_path: Path) -> None:
    model = tmp_path / "p9"
    trained = runner.invoke(app, ["participant", "train", "--id", "p9", "--shard", "0",
                                  "--of", "3", "--out", str(model)])
    assert trained.exit_code == 0, trained.output
    assert (model / "spec.json").exists()
    budget = runner.invoke(app, ["participant", "budget", "--id", "p9", "--model", str(model)])
    assert budget.exit_code == 0, budget.output
    assert "p9: no answers yet; ε = 0 of budget" in budget.stdout


def test_kafka_status_says_not_running_for_a_port_nobody_uses(tmp_path: Path) -> None:
    env = {"FI_KAFKA__LOCAL_HOME": str(tmp_path), "FI_KAFKA__LOCAL_PORT": "1"}
    result = runner.invoke(app, ["kafka", "status"], env=env)
    assert result.exit_code == 1 and "not running" in result.output


async def _cli(settings: Settings, *args: str, timeout: float = 120
               ) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fi_stream_cli", *args, env=service_env(settings),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@pytest.mark.kafka
async def test_topics_query_replay_and_merit_on_the_broker(
        settings_factory: object, model_dirs: dict[str, Path]) -> None:
    settings: Settings = settings_factory()  # type: ignore[operator]
    rc, out = await _cli(settings, "topics", "create")
    assert rc == 0, out
    async with federation(settings, model_dirs):
        rc, out = await _cli(settings, "query", "--test-index", "7", "--quorum", "2",
                             "--deadline-ms", "20000", "--strategy", "median")
        assert rc == 0, out
        result = json.loads(out[out.index("{"):out.rindex("}") + 1])
        assert result["status"] == "complete" and result["strategy"] == "median"
        assert "true label" in out
    rc, out = await _cli(settings, "replay", "--strategy", "hard_vote")
    assert rc == 0, out
    merit = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fi_stream_cli", "merit", env=service_env(settings),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert merit.stdout is not None
    seen = b""
    async with asyncio.timeout(90):  # imports and the first fetch take a while on 2 busy cores
        while b"merit_started" not in seen:
            line = await merit.stdout.readline()
            assert line, f"merit exited by itself: {seen.decode()[-2000:]}"
            seen += line
    merit.send_signal(signal.SIGTERM)
    out_b, _ = await asyncio.wait_for(merit.communicate(), 60)
    assert merit.returncode == 0, out_b.decode()[-2000:]
    assert b"merit_stopped" in out_b
