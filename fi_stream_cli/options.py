"""Option types and small helpers the command modules share."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fi_stream.choices import strategy_names

MetricsPortOpt = Annotated[int | None, typer.Option(
    min=0, max=65535, help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics "
    "(FI_METRICS_HOST to bind elsewhere).")]



def choices(name: str, values: list[str] | tuple[str, ...]) -> type[StrEnum]:
    """An enum of `values`: typer lists an enum's members in --help and rejects the rest."""
    return StrEnum(name, {v: v for v in values})  # type: ignore[return-value]


if TYPE_CHECKING:  # an Enum built at run time from the registry: a StrEnum to mypy
    StrategyName = StrEnum
else:
    StrategyName = choices("StrategyName", strategy_names())


def some(**values: Any) -> dict[str, Any] | None:
    kept = {k: v for k, v in values.items() if v is not None}
    return kept or None


def model_dir(pid: str, model: Path | None) -> Path:
    """A participant's model directory: --model, or .fi/models/ID."""
    return model or Path(".fi/models") / pid
