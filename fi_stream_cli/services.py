"""`fi-stream aggregator run` and `fi-stream merit`: the services besides the participant."""

from __future__ import annotations

from typing import Annotated

import typer

from fi_stream_cli.options import MetricsPortOpt, StrategyName, some
from fi_stream_cli.runtime import run_async, serve_with_metrics, settings_from

aggregator_app = typer.Typer(no_args_is_help=True, help="Run the aggregator.")


def register(app: typer.Typer) -> None:
    app.add_typer(aggregator_app, name="aggregator")
    app.command("merit")(merit_run)


@aggregator_app.command("run")
def aggregator_run(
    ctx: typer.Context,
    instance_id: Annotated[str | None, typer.Option(
        help="Stable id of this member (its transactional id); default host-pid.")] = None,
    strategy: Annotated[StrategyName | None, typer.Option(
        help="Aggregation rule for queries that name none (default soft_vote).")] = None,
    metrics_port: MetricsPortOpt = None,
) -> None:
    """Join responses and emit results and incentives until SIGTERM/SIGINT."""
    settings = settings_from(ctx, aggregator=some(strategy=strategy and strategy.value),
                             metrics_port=metrics_port)

    async def main() -> None:
        from consumers.aggregator import AggregatorService

        def make() -> AggregatorService:
            # A fresh member after an outage, with the same transactional id: it fences
            # the old producer and resumes its partitions from the committed resume state.
            return AggregatorService(settings, instance_id=instance_id)

        await serve_with_metrics(make, settings)

    run_async(main)


def merit_run(
    ctx: typer.Context,
    label_wait_s: Annotated[float, typer.Option(
        min=0.0, help="Score a window this long after it closed even if labels are missing.")
    ] = 30.0,
    metrics_port: MetricsPortOpt = None,
) -> None:
    """Score closed incentive windows by merit (Shapley) once their labels have arrived."""
    settings = settings_from(ctx, metrics_port=metrics_port)

    async def main() -> None:
        from consumers.merit import MeritService

        await serve_with_metrics(lambda: MeritService(settings, label_wait_s=label_wait_s),
                                 settings)

    run_async(main)
