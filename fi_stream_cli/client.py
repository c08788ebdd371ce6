"""`fi-stream status`, `query` and `demo`: look at the federation, ask it, try it out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fi_stream.choices import strategy_names
from fi_stream_cli.failures import one_line
from fi_stream_cli.runtime import run_async, settings_from

console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    app.command("status")(status)
    app.command("query")(query)
    app.command("demo")(demo)


def status(
    ctx: typer.Context,
    watch: Annotated[bool, typer.Option(
        "--watch", help="Redraw every --interval seconds until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(min=0.5, help="Seconds between redraws.")] = 2.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    recent: Annotated[int, typer.Option(
        min=1, help="Results read back per partition for the status counts.")] = 200,
) -> None:
    """The federation: participants (live, lag, ε of budget), aggregators, open queries,
    recent results by status, dead letters."""
    import json as json_lib

    settings = settings_from(ctx)

    async def main() -> None:
        from fi_stream_cli.status import render, snapshot

        if not watch:
            doc = await snapshot(settings, recent=recent)
            if as_json:
                print(json_lib.dumps(doc, indent=2))
            else:
                Console().print(render(doc))
            return
        import asyncio

        from rich.live import Live

        with Live(render(await snapshot(settings, recent=recent)), console=Console(),
                  auto_refresh=False) as live:
            while True:
                await asyncio.sleep(interval)
                live.update(render(await snapshot(settings, recent=recent)), refresh=True)

    try:
        run_async(main, kafka=settings)
    except KeyboardInterrupt:
        return


# -- query ------------------------------------------------------------------------------------

#: `fi-stream query` exit codes by result status (scripts can tell them apart).
QUERY_EXIT = {"complete": 0, "partial": 3, "insufficient": 4, "rejected": 5}


def query(
    ctx: typer.Context,
    test_index: Annotated[int, typer.Option(
        min=0, help="Use this digits test sample as input (0 to 359).")] = 0,
    input_file: Annotated[Path | None, typer.Option("--input", help=".npy float32 input.")] = None,
    deadline_ms: Annotated[int, typer.Option(
        min=1, help="Time budget from now, ms: answers after it are not used.")] = 2000,
    quorum: Annotated[int, typer.Option(
        min=1, help="Fewest answers for a `partial` result at the deadline.")] = 1,
    strategy: Annotated[str | None, typer.Option(
        help="Aggregation rule for this query (default: the aggregator's). The aggregator "
        "decides: it rejects a name it does not run (exit 5). This build runs "
        f"{', '.join(strategy_names())}.")] = None,
    wait_ready: Annotated[int, typer.Option(
        min=0, help="First wait until this many participants are live (consuming).")] = 0,
    wait_timeout_s: Annotated[float, typer.Option(
        min=0.0, help="Give up --wait-ready after this many seconds.")] = 120.0,
) -> None:
    """Send one query and print its Result as JSON. Exit 0 if complete, 3 if partial,
    4 if insufficient, 5 if rejected."""
    settings = settings_from(ctx)
    label: int | None = None
    if input_file is not None:
        import numpy as np

        x = np.load(input_file, allow_pickle=False).astype(np.float32)
    else:
        from fi_stream.models import load_digits_split

        split = load_digits_split()
        if test_index >= len(split.x_test):
            raise typer.BadParameter(f"{test_index} is past the test split (0 to "
                                     f"{len(split.x_test) - 1})", param_hint="--test-index")
        x, label = split.x_test[test_index], int(split.y_test[test_index])
    # --strategy is passed as given: the aggregator is the one authority on the names it
    # runs (a newer one may run more than this client knows), and it answers an unknown
    # one with a `rejected` Result whose reason is printed here.

    async def main() -> str:
        from producers.query_client import QueryClient, QueryRejectedError

        if wait_ready:
            from fi_stream_cli.status import wait_ready as wait_live

            live = await wait_live(settings, wait_ready, wait_timeout_s)
            console.print(f"{len(live)} participants live: {', '.join(live)}")
        async with QueryClient(settings, quorum=quorum, strategy=strategy) as client:
            try:
                result = await client.infer(x, deadline_ms=deadline_ms)
            except QueryRejectedError as exc:
                print(exc.result.model_dump_json(indent=2, exclude={"aggregate"}))
                typer.secho(f"error: {one_line(str(exc))}", fg="red", err=True)
                return "rejected"
        print(result.model_dump_json(indent=2, exclude={"aggregate"}))
        if label is not None:
            console.print(f"true label {label}, predicted {result.prediction} ({result.status}"
                          f"{'; missing ' + ', '.join(result.missing) if result.missing else ''})")
        return str(result.status)

    status = run_async(main, kafka=settings)
    raise typer.Exit(QUERY_EXIT.get(status, 1))


def demo(
    ctx: typer.Context,
    participants: Annotated[int, typer.Option(min=2, help="How many participants to train.")
                            ] = 5,
    alpha: Annotated[float, typer.Option(
        min=0.0, help="Dirichlet α of the label skew: small = very non-IID.")] = 0.3,
    seed: Annotated[int, typer.Option(help="Random seed of the shards and training.")] = 0,
    deadline_ms: Annotated[int, typer.Option(min=1, help="Each query's time budget, ms.")
                           ] = 5000,
    teachers: Annotated[int, typer.Option(
        min=0, help="Teachers per participant (0: one model, mechanism gaussian).")] = 16,
) -> None:
    """Train N participants, start them and an aggregator, stream the test split, report
    accuracy and each participant's ε (default budget: ε = 100 per 1,000 answers)."""
    from fi_stream_cli.demo import run_demo

    settings = settings_from(ctx)
    code = run_async(lambda: run_demo(settings, participants=participants, alpha=alpha,
                                      seed=seed, deadline_ms=deadline_ms, console=console,
                                      teachers=teachers or None))
    raise typer.Exit(code)
