"""`fi-stream audit`, `fi-stream replay` and `fi-stream bench audit`.

    fi-stream audit [--from B] [--to B] [--json OUT] [--report OUT.html]
    fi-stream replay --strategy NAME [--from B] [--to B] [--json OUT]
    fi-stream bench audit [--queries N] [--json OUT]

B is a comma list of times (epoch ms, or ISO 8601 with an offset) and/or
`topic:partition:offset` items; see consumers/auditor.py for exactly what they select.
`audit` exits 0 when everything holds, 1 with the list of discrepancies otherwise, 2 on a
usage or setup error.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from fi_stream.audit import DEFAULT_GRACE_MS
from fi_stream.errors import FiStreamError
from fi_stream_cli.bench import bench_app, machine, report
from fi_stream_cli.runtime import run_async, settings_from

if TYPE_CHECKING:
    from fi_stream.audit import AuditReport
    from fi_stream.settings import Settings

console = Console(stderr=True)

FromOpt = Annotated[str | None, typer.Option(
    "--from", help="Start: epoch ms, ISO 8601 time, or topic:partition:offset list.")]
ToOpt = Annotated[str | None, typer.Option(
    "--to", help="End (exclusive): epoch ms, ISO 8601 time, or topic:partition:offset list.")]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="Write the report as JSON here.")]


def register(app: typer.Typer) -> None:
    """Add `audit` and `replay` to the root app and `audit` to `fi-stream bench`."""
    app.command("audit")(audit_command)
    app.command("replay")(replay_command)
    bench_app.command("audit")(bench_audit)


def _bounds(settings: Settings, start: str | None, end: str | None) -> tuple[Any, Any]:
    from consumers.auditor import Bound

    try:
        return (Bound.parse(start, settings.topic_names) if start else None,
                Bound.parse(end, settings.topic_names) if end else None)
    except FiStreamError as exc:
        raise typer.BadParameter(str(exc)) from None


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")


def _summary(report: AuditReport) -> None:
    c = report.counts
    t = report.throughput
    console.print(
        f"audited {c.get('records', 0)} records{' (a slice of the log)' if report.partial else ''}"
        f": {c.get('queries', 0)} queries, {c.get('results', 0)} results, "
        f"{c.get('responses', 0)} response blocks, {c.get('incentives', 0)} incentives "
        f"in {c.get('windows_closed', 0)} closed windows, {c.get('dlq', 0)} dead letters"
        + (f"; {t['events_per_s']:,.0f} records/s, {t.get('queries_per_s', 0):,.0f} queries/s"
           if t else ""))
    for s in report.spend:
        eps = "n/a (no budget registered)" if s.epsilon is None else f"{s.epsilon:.4g}"
        console.print(f"  {s.participant_id}: {s.answers} answers, ε = {eps}"
                      + (f" of {s.epsilon_max:g}" if s.epsilon_max is not None else "")
                      + (" [red]EXCEEDED[/]" if s.exceeded else ""))
    if report.dlq:
        console.print("  dead letters: " + ", ".join(f"{k} {v}" for k, v in report.dlq.items()))


def audit_command(
    ctx: typer.Context,
    start: FromOpt = None,
    end: ToOpt = None,
    json_out: JsonOpt = None,
    report_out: Annotated[Path | None, typer.Option(
        "--report", help="Write a self-contained HTML report here.")] = None,
    grace_ms: Annotated[int, typer.Option(
        min=0, help="How long after its deadline a result may take before it is missing.")
    ] = DEFAULT_GRACE_MS,
    show: Annotated[int, typer.Option(min=0, help="Print at most this many discrepancies.")
                    ] = 100,
    merit: Annotated[bool | None, typer.Option(
        "--merit/--no-merit", help="Also measure what --report plots: Shapley merit vs "
        "label-free scores per window (2^N coalitions each) and ε over time; default: on "
        "with --report.")] = None,
    allow_empty: Annotated[bool, typer.Option(
        "--allow-empty", help="Exit 0 even when no records were found.")] = False,
) -> None:
    """Read every topic (read_committed, no consumer group), recompute results, incentives
    and privacy spend, and report every discrepancy. Exit 0 if all holds, else 1."""
    from consumers.auditor import Auditor
    from fi_stream.kafka import bootstrap_servers

    settings = settings_from(ctx)
    lo, hi = _bounds(settings, start, end)
    with_merit = merit if merit is not None else report_out is not None
    report = run_async(lambda: Auditor(settings, start=lo, end=hi, grace_ms=grace_ms,
                                       merit=with_merit).run(), kafka=settings)
    doc = report.to_json()
    doc["machine"] = machine()
    doc["topics"] = settings.topic_names.model_dump()
    if json_out is not None:
        _write_json(json_out, doc)
    if report_out is not None:
        from fi_stream.audit.page import render_html

        report_out.parent.mkdir(parents=True, exist_ok=True)
        report_out.write_text(render_html(report, title=f"fi-stream audit "
                                          f"{settings.kafka.topic_prefix or ''}".strip()))
    if not report.counts.get("records", 0) and not allow_empty:
        from fi_stream.errors import AuditEmptyError

        raise AuditEmptyError(
            f"nothing to audit: no records in {settings.topic_names.queries} and its sibling"
            f" topics on {bootstrap_servers(settings)} (wrong FI_KAFKA__TOPIC_PREFIX, range or"
            " broker?); pass --allow-empty to accept an empty log")
    _summary(report)
    for d in report.discrepancies[:show]:
        print(d.line())
    if len(report.discrepancies) > show:
        print(f"... and {len(report.discrepancies) - show} more (see --json)")
    if report.ok:
        console.print("[green]audit clean[/]")
    else:
        console.print(f"[red]{len(report.discrepancies)} discrepancies[/]: "
                      + ", ".join(f"{k} {n}" for k, n in report.by_kind().items()))
    raise typer.Exit(0 if report.ok else 1)


def replay_command(
    ctx: typer.Context,
    strategy: Annotated[str, typer.Option(help="Aggregation strategy to replay under.")],
    start: FromOpt = None,
    end: ToOpt = None,
    json_out: JsonOpt = None,
) -> None:
    """Recompute the results of the range under another strategy from the recorded answers;
    with fi.feedback labels, compare the accuracy of the recorded and replayed results."""
    from consumers.auditor import Auditor
    from fi_stream.aggregation import STRATEGIES

    if strategy not in STRATEGIES:
        raise typer.BadParameter(f"--strategy must be one of {', '.join(sorted(STRATEGIES))}")
    settings = settings_from(ctx)
    lo, hi = _bounds(settings, start, end)
    result = run_async(lambda: Auditor(settings, start=lo, end=hi).replay(strategy),
                       kafka=settings)
    doc = result.to_json()
    if json_out is not None:
        _write_json(json_out, doc)
    print(json.dumps(doc, indent=2))
    if result.labelled:
        console.print(
            f"{result.labelled} labelled results: recorded "
            f"({', '.join(result.recorded_strategies)}) accuracy "
            f"{result.recorded_accuracy:.4f}, replayed {strategy} {result.replayed_accuracy:.4f};"
            f" {result.changed} of {result.replayed} predictions change")
    else:
        console.print(f"no labels in fi.feedback; {result.changed} of {result.replayed} "
                      "predictions change")


def bench_audit(
    ctx: typer.Context,
    queries: Annotated[int, typer.Option(min=1, help="Queries in the synthetic log.")] = 8000,
    participants: Annotated[int, typer.Option(min=2, max=12)] = 5,
    batch: Annotated[int, typer.Option(min=1, help="Queries per response batch.")] = 32,
    repeat: Annotated[int, typer.Option(min=1, help="Audit runs; the best is reported.")] = 3,
    keep: Annotated[bool, typer.Option(help="Keep the bench topics afterwards.")] = False,
    json_out: JsonOpt = None,
) -> None:
    """Audit throughput (events read and checked per second) on a synthetic log written to
    fresh topics (prefix bench-audit-*) of the configured broker."""
    from consumers.auditor import Auditor
    from fi_stream.kafka import delete_topics, ensure_topics
    from fi_stream.testing import produce_log, synthetic_log

    base = settings_from(ctx)
    prefix = f"{base.kafka.topic_prefix}bench-audit-{uuid.uuid4().hex[:8]}."
    settings = base.model_copy(update={"kafka": base.kafka.model_copy(
        update={"topic_prefix": prefix})})
    started = time.perf_counter()
    synthetic = synthetic_log(queries=queries, participants=participants, batch=batch,
                              partitions=settings.kafka.partitions)
    console.print(f"bench audit: {len(synthetic.records)} events generated in "
                  f"{time.perf_counter() - started:.1f}s; writing them under {prefix}")

    async def main() -> tuple[list[AuditReport], list[AuditReport]]:
        await ensure_topics(settings)
        try:
            await produce_log(settings, synthetic)
            plain = [await Auditor(settings, merit=False).run() for _ in range(repeat)]
            merit = [await Auditor(settings, merit=True).run() for _ in range(repeat)]
            return plain, merit
        finally:
            if not keep:
                await delete_topics(settings)

    plain, with_merit = run_async(main)
    best = max(plain, key=lambda r: r.throughput["events_per_s"])
    best_merit = max(with_merit, key=lambda r: r.throughput["events_per_s"])
    doc: dict[str, Any] = {
        "benchmark": "audit", "queries": queries, "participants": participants,
        "batch": batch, "events": best.throughput["events"], "ok": best.ok and best_merit.ok,
        "discrepancies": len(best.discrepancies),
        # `fi-stream audit` as it runs by default (no --report): every check, no merit.
        "events_per_s": best.throughput["events_per_s"],
        # With what --report / --merit add: Shapley merit vs label-free, ε series.
        "events_per_s_with_merit": best_merit.throughput["events_per_s"],
        # Events are records: a block of N queries is one. Queries audited per second:
        "queries_per_s": best.throughput["queries_per_s"],
        "queries_per_s_with_merit": best_merit.throughput["queries_per_s"],
        "runs": [r.throughput for r in plain],
        "runs_with_merit": [r.throughput for r in with_merit], "machine": machine(),
        "command": "fi-stream bench audit " + " ".join(_argv(ctx)),
    }
    report(doc, json_out)
    if not best.ok:
        console.print("[red]the synthetic log did not audit clean:[/]")
        for d in best.discrepancies[:20]:
            console.print(d.line())
        raise typer.Exit(1)


def _argv(ctx: typer.Context) -> Sequence[str]:
    return [f"--{k.replace('_', '-')}={v}" for k, v in ctx.params.items()
            if v is not None and k != "json_out"]




