"""The supervision files in infra/ restart what fails and run commands that exist."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fi_stream_cli.main import app

INFRA = Path(__file__).resolve().parents[2] / "infra"
UNITS = sorted((INFRA / "systemd").glob("*.service"))


def _service_section(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif "=" in line and not line.startswith("#") and section == "[Service]":
            key, value = line.split("=", 1)
            out.setdefault(key, value)
    return out


def test_there_is_a_unit_per_service() -> None:
    assert {u.name for u in UNITS} == {"participant@.service", "aggregator@.service",
                                       "merit.service"}


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_each_unit_restarts_on_failure_but_not_on_a_config_error(unit: Path) -> None:
    service = _service_section(unit)
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "2"
    assert service["KillSignal"] == "SIGTERM"


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_each_unit_runs_a_command_the_cli_has(unit: Path) -> None:
    argv = _service_section(unit)["ExecStart"].split()[1:]
    words = [a for a in argv if not a.startswith("-") and "%" not in a and "/" not in a]
    result = CliRunner().invoke(app, [*words, "--help"])
    assert result.exit_code == 0, result.output
    for option in (a for a in argv if a.startswith("--")):
        assert option in result.output, (option, result.output)


def test_the_compose_broker_comes_back_after_a_crash() -> None:
    text = (INFRA / "docker-compose.yml").read_text()
    kafka = text[text.index("\n  kafka:"):]
    assert "\n    restart: unless-stopped\n" in kafka
