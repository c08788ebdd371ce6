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

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console

from fi_stream.audit import (
    DEFAULT_GRACE_MS,
    AuditLog,
    AuditReport,
    Logged,
    TopicKind,
)
from fi_stream.errors import FiStreamError
from fi_stream.join import JoinTable
from fi_stream.results import IncentiveWindow, build_result
from fi_stream.settings import Settings
from fi_stream.signing import public_key_bytes, sign_batch
from fi_stream_cli.bench import bench_app, machine, report
from fi_stream_cli.runtime import run_async, settings_from
from schemas import (
    Budget,
    Decline,
    Event,
    Feedback,
    Participant,
    Privacy,
    Query,
    ResponseBatch,
    Tensor,
    encode,
    headers,
)

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
        f"{c.get('responses', 0)} response batches, {c.get('incentives', 0)} incentives "
        f"in {c.get('windows_closed', 0)} closed windows, {c.get('dlq', 0)} dead letters"
        + (f"; {t['events_per_s']:,.0f} events/s" if t else ""))
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
) -> None:
    """Read every topic (read_committed, no consumer group), recompute results, incentives
    and privacy spend, and report every discrepancy. Exit 0 if all holds, else 1."""
    from consumers.auditor import Auditor

    settings = settings_from(ctx)
    lo, hi = _bounds(settings, start, end)
    with_merit = merit if merit is not None else report_out is not None
    report = run_async(lambda: Auditor(settings, start=lo, end=hi, grace_ms=grace_ms,
                                       merit=with_merit).run())
    doc = report.to_json()
    doc["machine"] = machine()
    doc["topics"] = settings.topic_names.model_dump()
    if json_out is not None:
        _write_json(json_out, doc)
    if report_out is not None:
        from fi_stream_cli.audit_report import render_html

        report_out.parent.mkdir(parents=True, exist_ok=True)
        report_out.write_text(render_html(report, title=f"fi-stream audit "
                                          f"{settings.kafka.topic_prefix or ''}".strip()))
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
    result = run_async(lambda: Auditor(settings, start=lo, end=hi).replay(strategy))
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


# -- a synthetic log (bench, tests) ------------------------------------------------------------

@dataclass
class SyntheticLog:
    """Events in production order, each with its topic and partition; offsets are predicted
    (fresh topics, one idempotent producer: every partition counts 0, 1, 2, …)."""

    records: list[tuple[TopicKind, int, str, Event]] = field(default_factory=list)
    keys: dict[str, Ed25519PrivateKey] = field(default_factory=dict)
    _next: dict[tuple[TopicKind, int], int] = field(default_factory=dict)

    def add(self, topic: TopicKind, partition: int, key: str, event: Event) -> int:
        offset = self._next.get((topic, partition), 0)
        self._next[(topic, partition)] = offset + 1
        self.records.append((topic, partition, key, event))
        return offset

    def audit_log(self) -> AuditLog:
        """The same events as the auditor would read them (no clock: every query is due)."""
        out = AuditLog()
        seen: dict[tuple[TopicKind, int], int] = {}
        for topic, partition, _, event in self.records:
            offset = seen.get((topic, partition), 0)
            seen[(topic, partition)] = offset + 1
            target: list[Any] = getattr(out, topic)
            target.append(Logged(event, partition, offset))
            out.records[topic] = out.records.get(topic, 0) + 1
        return out


def synthetic_log(*, queries: int, participants: int = 5, partitions: int = 4,
                  batch: int = 32, window_results: int = 200, labelled: float = 0.5,
                  decline_rate: float = 0.02, seed: int = 0, start_ms: int = 1_700_000_000_000,
                  ) -> SyntheticLog:
    """A faithful log of `queries` queries: participants of differing skill answer in signed
    micro-batches; the aggregator's own pure code (JoinTable, build_result, IncentiveWindow)
    makes the results and incentives; a share of queries gets a feedback label."""
    rng = np.random.default_rng(seed)
    out = SyntheticLog()
    privacy = Privacy(clip_norm=1.0, noise_multiplier=0.3)
    ids = [f"p{k + 1}" for k in range(participants)]
    keys = out.keys = {pid: Ed25519PrivateKey.generate() for pid in ids}
    skill = np.linspace(0.9, 0.4, participants)
    for pid in ids:
        out.add("registry", 0, pid, Participant(
            participant_id=pid, public_key=public_key_bytes(keys[pid]), tasks=["digits"],
            model_version="synthetic", privacy=privacy,
            budget=Budget(epsilon_max=1e6, delta=1e-5), registered_at_ms=start_ms))
    expected = frozenset(ids)
    table = JoinTable()
    windows = {p: IncentiveWindow(p, 0, start_ms, "loo_agreement") for p in range(partitions)}
    x = Tensor.from_numpy(np.zeros(64, np.float32))
    now = start_ms
    for first in range(0, queries, batch * partitions):
        for p in range(partitions):
            chunk = [i for i in range(first + p, min(queries, first + batch * partitions),
                                      partitions)]
            if not chunk:
                continue
            labels = rng.integers(0, 10, len(chunk))
            qids = [f"q{i:08d}" for i in chunk]
            for qid in qids:
                q = Query(query_id=qid, task="digits", input=x, created_at_ms=now,
                          deadline_ms=now + 2000, quorum=2)
                table.add_query(q, p, out.add("queries", p, qid, q), expected)
            now += 3
            for k, pid in enumerate(ids):
                declines = rng.random(len(chunk)) < decline_rate
                answered = [q for q, d in zip(qids, declines, strict=True) if not d]
                right = rng.random(len(chunk)) < skill[k]
                cls = np.where(right, labels, rng.integers(0, 10, len(chunk)))[~declines]
                rows = rng.dirichlet(np.full(10, 0.3), len(answered)).astype(np.float32) * 0.3
                rows[np.arange(len(answered)), cls] += 0.7
                rows += rng.normal(0, 0.05, rows.shape).astype(np.float32)
                b = sign_batch(ResponseBatch(
                    participant_id=pid, batch_id=uuid.uuid4().hex, task="digits",
                    model_version="synthetic", privacy=privacy, produced_at_ms=now,
                    query_partition=p, answered=answered, outputs=Tensor.from_numpy(rows),
                    declined=[Decline(query_id=q, reason="budget_exhausted")
                              for q, d in zip(qids, declines, strict=True) if d]), keys[pid])
                table.add_batch(b, p, out.add("responses", p, pid, b), now)
            now += 2
            for oq in table.take_settled():
                window = windows[oq.partition]
                result, rids, outputs = build_result(oq, strategy="soft_vote",
                                                     completed_at_ms=now, window=window.ref)
                window.add(result, rids, outputs)
                table.close(oq, now)
                out.add("results", oq.partition, result.query_id, result)
                if window.results >= window_results:
                    for inc in window.close(budget=100.0):
                        out.add("incentives", oq.partition, inc.participant_id, inc)
                    windows[oq.partition] = IncentiveWindow(oq.partition, window.seq + 1, now,
                                                            "loo_agreement")
            for qid, label in zip(qids, labels, strict=True):
                if rng.random() < labelled:
                    out.add("feedback", p, qid, Feedback(query_id=qid, label=int(label),
                                                         created_at_ms=now))
    for p, window in windows.items():
        if window.results:
            for inc in window.close(budget=100.0):
                out.add("incentives", p, inc.participant_id, inc)
    return out


async def produce_log(settings: Settings, synthetic: SyntheticLog) -> None:
    """Write the events to the (fresh) topics of `settings`, in order."""
    from fi_stream.kafka import make_producer

    names = settings.topic_names.model_dump()
    producer = make_producer(settings, linger_ms=20)
    await producer.start()
    # Fresh topics: the first sends may meet a leader still being elected; they are retried.
    client_log = logging.getLogger("aiokafka")
    level = client_log.level
    client_log.setLevel(logging.ERROR)
    try:
        futures = []
        for topic, partition, key, event in synthetic.records:
            futures.append(await producer.send(names[topic], encode(event), key=key.encode(),
                                               partition=partition,
                                               headers=headers(type(event))))
        await asyncio.gather(*futures)
    finally:
        client_log.setLevel(level)
        await producer.stop()


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




