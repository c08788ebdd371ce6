"""The project's own docs work: the example config loads and lists every setting, the
Docker federation names real commands and scrapes every service's metrics, and the
README links them (issue 15)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import typer
import yaml
from pydantic import BaseModel

from fi_stream.settings import Settings, load_settings
from fi_stream_cli.main import app
from schemas.events import ResultStatus

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "infra" / "docker-compose.federation.yml"


def fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str]]:
    """(section, key) of every setting, nested groups as TOML sections."""
    out = []
    for name, info in model.model_fields.items():
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            out += fields(kind, name)
        else:
            out.append((prefix, name))
    return out


def test_the_example_config_loads_and_names_every_setting(monkeypatch: Any) -> None:
    for var in [v for v in __import__("os").environ if v.startswith("FI_")]:
        monkeypatch.delenv(var)
    path = ROOT / "docs" / "config.example.toml"
    settings = load_settings(path)
    assert settings == Settings()  # the example shows the defaults
    text = path.read_text()
    sections = re.split(r"^\[(\w+)\]", text, flags=re.M)
    body = {"": sections[0], **dict(zip(sections[1::2], sections[2::2], strict=True))}
    missing = [f"{s}.{k}".strip(".") for s, k in fields(Settings)
               if not re.search(rf"^#? ?{k} = ", body.get(s, ""), re.M)]
    assert not missing, f"docs/config.example.toml lacks {missing}"


def command_of(args: list[str]) -> tuple[click.Command, list[str]]:
    """The click command `fi-stream ARGS` runs, and the arguments left for it."""
    cmd: click.Command = typer.main.get_command(app)
    rest = list(args)
    while isinstance(cmd, click.Group) and rest and rest[0] in cmd.commands:
        cmd = cmd.commands[rest.pop(0)]
    return cmd, rest


def fi_commands(compose: dict[str, Any]) -> dict[str, list[str]]:
    out = {}
    for name, service in compose["services"].items():
        if service.get("image") != "fi-stream:local":
            continue
        command = service["command"]
        if service.get("entrypoint") == ["sh", "-c"]:
            for line in re.findall(r"fi-stream ([^|;&]+?)(?:\|\||;|&&|$)", command[0]):
                out[f"{name}: {line.strip()}"] = line.split()
        else:
            out[name] = command
    return out


def test_the_docker_federation_names_real_commands_and_options() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    commands = fi_commands(compose)
    assert {"topics", "p0", "p1", "p2", "aggregator", "merit"} <= commands.keys()
    assert any(k.startswith("train: participant train") for k in commands)
    for name, args in commands.items():
        cmd, rest = command_of(args)
        assert not isinstance(cmd, click.Group), f"{name}: {args} is not a command"
        ctx = cmd.make_context("fi-stream", [a.replace("$$k", "0") for a in rest])
        assert ctx.params is not None, name


def test_prometheus_scrapes_every_service_that_serves_metrics() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    serving = {name for name, args in fi_commands(compose).items() if "--metrics-port" in args}
    volume = compose["services"]["prometheus"]["volumes"][0].split(":")[0]
    prometheus = yaml.safe_load((COMPOSE.parent / volume).read_text())
    targets = {t.split(":")[0] for job in prometheus["scrape_configs"]
               for group in job["static_configs"] for t in group["targets"]}
    assert targets == serving == {"p0", "p1", "p2", "aggregator", "merit"}
    for service in compose["services"].values():
        build = service.get("build")
        if build:
            assert (COMPOSE.parent / build["context"] / build["dockerfile"]).is_file()


def test_the_readme_links_the_docs_and_the_design_covers_the_contract() -> None:
    readme = (ROOT / "README.md").read_text()
    for path in ("docs/design.md", "docs/config.example.toml",
                 "infra/docker-compose.federation.yml"):
        assert f"]({path})" in readme, path
        assert (ROOT / path).is_file()
    assert "../shared" not in readme
    design = (ROOT / "docs" / "design.md").read_text()
    for topic in Settings().topics.model_dump().values():
        assert f"`{topic}`" in design, topic
    for status in ResultStatus.__args__:
        assert f"`{status}`" in design, status
