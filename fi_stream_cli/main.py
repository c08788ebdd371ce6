"""`fi-stream`: the root command; each subject's commands live in their own module, which
registers them here (`register(app)`): broker (kafka, topics, keys), participants, services
(aggregator, merit), privacy, client (status, query, demo), experiment, bench, admin, audit.

Heavy libraries (torch, scikit-learn, aiokafka, numpy) are imported inside the commands that
use them: `fi-stream --help` and `fi-stream status` would otherwise pay ~3 s of imports.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fi_stream.choices import LOG_LEVELS
from fi_stream_cli import audit, broker, client, experiment, participants, privacy, services
from fi_stream_cli.admin import admin_app
from fi_stream_cli.bench import bench_app
from fi_stream_cli.failures import CliApp
from fi_stream_cli.options import choices

app = CliApp(no_args_is_help=True, add_completion=True,
             help="Federated inference over Kafka.")

ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", help="TOML settings file (see docs/config.example.toml).")]
if TYPE_CHECKING:  # an Enum built at run time: a StrEnum to mypy
    LogLevel = StrEnum
else:
    LogLevel = choices("LogLevel", LOG_LEVELS)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"fi-stream {version('fi-stream')}")
        raise typer.Exit()


@app.callback()
def _root(ctx: typer.Context, config: ConfigOpt = None,
          log_level: Annotated[LogLevel | None, typer.Option(
              case_sensitive=False,
              help="Log level; DEBUG also shows the traceback of a failure.")] = None,
          version: Annotated[bool, typer.Option(
              "--version", callback=_version, is_eager=True,
              help="Print the version and exit.")] = False) -> None:
    ctx.ensure_object(dict).update(config=config, log_level=log_level and log_level.value)


# --help lists commands, then groups, each in the order they are registered here.
broker.register(app)  # groups kafka, topics, keys
participants.register(app)  # group participant
services.register(app)  # group aggregator; command merit
privacy.register(app)  # group privacy
client.register(app)  # commands status, query, demo
experiment.register(app)  # group experiment
app.add_typer(bench_app, name="bench")
app.add_typer(admin_app, name="admin")
audit.register(app)  # commands audit, replay; bench audit
