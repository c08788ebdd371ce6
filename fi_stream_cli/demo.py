"""`make demo`: the whole loop on a local broker, as separate processes, with a report."""

from __future__ import annotations

import asyncio
import base64
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from consumers.merit import MeritService
from fi_stream.clock import now_ms
from fi_stream.kafka import make_consumer
from fi_stream.kafka.reading import read_to_end
from fi_stream.ledger import LEDGER_FILE, PrivacyLedger
from fi_stream.merit import METHOD
from fi_stream.models import load_digits_split, load_spec
from fi_stream.privacy import PrivacyBudget, choose_mechanism
from fi_stream.settings import Settings
from fi_stream.signing import public_key_bytes
from fi_stream_cli.federation import LocalFederation, fresh_settings, local_broker
from producers.feedback import publish_labels
from producers.query_client import QueryClient
from schemas import Incentive, Result, decode
from schemas.blocks import decode_response_block


@dataclass
class Report:
    labels: dict[str, int] = field(default_factory=dict)
    results: dict[str, Result] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0


async def run_demo(base: Settings, *, participants: int, alpha: float, seed: int,
                   deadline_ms: int, console: Console, teachers: int | None = None) -> int:
    run_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    # The demo is its federation's operator: its key signs the registry, and every
    # service (and the audit) trusts only what it signed.
    operator = Ed25519PrivateKey.generate()
    settings = fresh_settings(
        base, f"demo-{run_id}.", aggregator={"window_seconds": 2.0},
        security={"operator_pubkey": base64.b64encode(public_key_bytes(operator)).decode()})
    fed = LocalFederation(settings, Path(".fi/demo") / run_id)
    _log_to(fed.home / "logs" / "demo.log", settings.log_level)
    if not settings.kafka.bootstrap:
        console.print("starting the local Kafka broker …")
    async with local_broker(settings):
        ids = [f"p{k + 1}" for k in range(participants)]
        how = f", {teachers} teachers each" if teachers else ""
        console.print(f"training {participants} participants on Dirichlet(α={alpha}) "
                      f"shards{how} …")
        solo_clean = fed.train(ids, alpha=alpha, seed=seed, teachers=teachers)
        try:
            await fed.start(ids, operator=operator)
            report = await _stream(settings, deadline_ms, console)
            await publish_labels(settings, report.labels)
            incentives = await _label_free_incentives(settings, len(report.results), timeout=30)
            merit = await _merit(settings, incentives)
            solo_noised = await _solo_accuracy(settings, report.labels)
        finally:
            codes = await fed.stop()
        _print_report(console, report, solo_clean, solo_noised, incentives + merit, settings,
                      ids)
        _print_spend(console, settings, fed.home, ids)
        console.print(f"logs and models: {fed.home}; service exit codes {codes}")
        audit_ok = await _audit(settings, fed.home / "audit.html", console)
        return 0 if all(c == 0 for c in codes) and audit_ok else 1


def _log_to(path: Path, level: str) -> None:
    """This process's log lines (the client, merit, aiokafka) go to the run's folder, next
    to each service's own log: the terminal shows the story only."""
    from fi_stream.logging import configure_logging

    path.parent.mkdir(parents=True, exist_ok=True)
    configure_logging(level, json=True, stream=path.open("a", buffering=1))


async def _audit(settings: Settings, html: Path, console: Console) -> bool:
    """Replay this run's log: every result, incentive, signature and privacy spend."""
    from consumers.auditor import Auditor
    from fi_stream.audit.page import render_html

    report = await Auditor(settings, merit=True).run()
    page = render_html(report, title=f"fi-stream demo audit {settings.kafka.topic_prefix}")
    await asyncio.to_thread(html.write_text, page)
    events = int(report.throughput.get("events", 0))
    if report.ok:
        console.print(f"[green]audit: clean[/] — {events} events replayed, every result, incentive,"
                      f" signature and privacy spend recomputed; report: {html}")
    else:
        console.print(f"[red]audit: {len(report.discrepancies)} discrepancies[/] "
                      f"{report.by_kind()}; report: {html}")
        for d in report.discrepancies[:10]:
            console.print(f"  {d.line()}")
    return report.ok


async def _stream(settings: Settings, deadline_ms: int, console: Console) -> Report:
    split = load_digits_split()
    report = Report()
    async with QueryClient(settings, client_id="demo", quorum=3) as client:
        warm = await client.infer(split.x_test[0], deadline_ms=deadline_ms)  # the loop is live
        del warm
        started = time.perf_counter()
        with Progress(TextColumn("streaming queries"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, transient=False) as bar:
            task = bar.add_task("queries", total=len(split.x_test))
            async for i, query, result in client.stream(split.x_test, deadline_ms=deadline_ms):
                report.labels[query.query_id] = int(split.y_test[i])
                report.results[query.query_id] = result
                report.latencies_ms.append(now_ms() - query.created_at_ms)
                bar.advance(task)
        report.wall_s = time.perf_counter() - started
    return report


async def _read_all(settings: Settings, topic: str) -> list[bytes]:
    consumer = make_consumer(settings, group_id=None)
    await consumer.start()
    try:
        return [r.value for r in await read_to_end(consumer, topic) if r.value]
    finally:
        await consumer.stop()


async def _label_free_incentives(settings: Settings, n_results: int, timeout: float
                                 ) -> list[Incentive]:
    """Wait until incentive windows cover every result (plus the warm-up query)."""
    deadline = time.monotonic() + timeout
    while True:
        incentives = [decode(v, Incentive)
                      for v in await _read_all(settings, settings.topic_names.incentives)]
        windows = {(i.window.partition, i.window.seq): i.window.results for i in incentives}
        if sum(windows.values()) >= n_results + 1 or time.monotonic() > deadline:
            return incentives
        await asyncio.sleep(0.5)


async def _merit(settings: Settings, label_free: list[Incentive]) -> list[Incentive]:
    """Score every closed window by merit (Shapley, from the labels just published)."""
    windows = {(i.window.partition, i.window.seq) for i in label_free}
    async with MeritService(settings, label_wait_s=10, interval_s=0.2) as merit:
        await merit.wait_scored(windows, timeout=60)
    return [i for v in await _read_all(settings, settings.topic_names.incentives)
            if (i := decode(v, Incentive)).method == METHOD]


async def _solo_accuracy(settings: Settings, labels: dict[str, int]) -> dict[str, float]:
    """Each participant's accuracy on what the aggregator saw: its noised outputs (the
    answered rows of its response blocks)."""
    hits: dict[str, int] = defaultdict(int)
    seen: dict[str, int] = defaultdict(int)
    for value in await _read_all(settings, settings.topic_names.responses):
        block = decode_response_block(value)
        preds = block.outputs.argmax(axis=1).tolist()
        for qid, pred, status in zip(block.query_ids, preds, block.status.tolist(),
                                     strict=True):
            if status == 0 and qid in labels:
                seen[block.participant_id] += 1
                hits[block.participant_id] += int(pred == labels[qid])
    return {pid: hits[pid] / n for pid, n in seen.items()}


def _print_spend(console: Console, settings: Settings, home: Path, ids: list[str]) -> None:
    """Each participant's ε as its own ledger counts it (reservations ahead included)."""
    p = settings.privacy
    budget = PrivacyBudget(epsilon_max=p.epsilon_max, delta=p.delta)
    for pid in ids:
        directory = home / "models" / pid
        mechanism = choose_mechanism(teachers=load_spec(directory).teachers,
                                     clip_norm=p.clip_norm, noise_multiplier=p.noise_multiplier,
                                     budget=budget, budget_answers=p.budget_answers)
        ledger = PrivacyLedger.open(directory / LEDGER_FILE, budget, mechanism)
        console.print(f"{pid}: ε = {ledger.epsilon:.3g} of {p.epsilon_max:g} "
                      f"(δ = {p.delta:g}); {mechanism.describe()}, "
                      f"{ledger.reused} answers reused free")


def _accuracy(report: Report) -> float:
    ok = sum(r.prediction == report.labels[q] for q, r in report.results.items())
    return ok / max(1, len(report.results))


@dataclass
class _Rewards:
    """The demo's incentives summed per participant, label-free and merit apart."""

    label_free: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    merit: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    #: (partition, seq) of each merit window → (rank correlation, skill fairness).
    comparisons: dict[tuple[int, int], tuple[float | None, float | None]] = field(
        default_factory=dict)
    windows: dict[str, int] = field(default_factory=dict)  # method -> windows

    @classmethod
    def of(cls, incentives: list[Incentive], label_free_method: str) -> _Rewards:
        out = cls()
        for inc in incentives:
            (out.merit if inc.method == METHOD else out.label_free)[inc.participant_id] += \
                inc.reward
            if inc.method == METHOD:
                out.comparisons[(inc.window.partition, inc.window.seq)] = (
                    inc.rank_correlation, inc.skill_fairness)
        out.windows = {m: len({(i.window.partition, i.window.seq) for i in incentives
                               if (i.method == METHOD) == (m == METHOD)})
                       for m in (label_free_method, METHOD)}
        return out


def _print_report(console: Console, report: Report, solo_clean: dict[str, float],
                  solo_noised: dict[str, float], incentives: list[Incentive],
                  settings: Settings, ids: list[str]) -> None:
    rewards = _Rewards.of(incentives, settings.aggregator.incentive_method)
    console.print(_table(report, solo_clean, solo_noised, rewards, settings, ids))
    console.print(_traffic(report, settings))
    if rewards.comparisons:
        rhos = [r for r, _ in rewards.comparisons.values() if r is not None]
        fairness = [f for _, f in rewards.comparisons.values() if f is not None]
        console.print(
            f"label-free vs merit over {len(rewards.comparisons)} windows: mean Spearman ρ = "
            f"{np.mean(rhos) if rhos else float('nan'):.3f}, mean skill fairness F = "
            f"{np.mean(fairness) if fairness else float('nan'):.3f}")
    best = max(solo_noised.values(), default=0.0)
    verdict = "above" if _accuracy(report) > best else "NOT above"
    console.print(f"federated accuracy {_accuracy(report):.3f} is {verdict} the best single "
                  f"participant's {best:.3f}")


def _table(report: Report, solo_clean: dict[str, float], solo_noised: dict[str, float],
           rewards: _Rewards, settings: Settings, ids: list[str]) -> Table:
    """Per participant: solo accuracy (noised, clean) and rewards; then the federation's."""
    budget, label_free = settings.aggregator.reward_budget, settings.aggregator.incentive_method
    table = Table(title="fi-stream demo: digits, federated vs. solo")
    table.add_column("participant")
    table.add_column("solo accuracy (noised outputs)", justify="right")
    table.add_column("solo accuracy (own model, no noise)", justify="right")
    for method, name in ((label_free, "label-free"), (METHOD, "merit, Shapley")):
        table.add_column(f"{name} reward ({method}), points of "
                         f"{rewards.windows[method] * budget:g}", justify="right")
    table.caption = (f"Rewards are points: each incentive window splits a budget of "
                     f"{budget:g} among the participants; label-free: "
                     f"{rewards.windows[label_free]} windows, merit: "
                     f"{rewards.windows[METHOD]} windows. Accuracy: share of the "
                     f"{len(report.results)} test queries predicted right.")
    for pid in ids:
        table.add_row(pid, f"{solo_noised.get(pid, 0.0):.3f}", f"{solo_clean[pid]:.3f}",
                      f"{rewards.label_free.get(pid, 0.0):.2f}",
                      f"{rewards.merit.get(pid, 0.0):.2f}")
    table.add_section()
    table.add_row("[bold]federated[/]", f"[bold]{_accuracy(report):.3f}[/]", "", "", "")
    return table


def _traffic(report: Report, settings: Settings) -> str:
    """Queries by status, end-to-end latency, throughput and the privacy budget."""
    lat = np.asarray(report.latencies_ms, dtype=np.float64)
    statuses: dict[str, int] = defaultdict(int)
    for r in report.results.values():
        statuses[r.status] += 1
    p = settings.privacy
    by_status = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items(),
                                                        key=lambda kv: -kv[1]))
    return (f"{len(report.results)} queries ({by_status}); end-to-end latency, query created "
            f"→ result received by the client: mean {lat.mean():.1f} ms, p50 "
            f"{np.percentile(lat, 50):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms; "
            f"{len(report.results) / report.wall_s:.1f} queries/s; "
            f"privacy budget: ε_max = {p.epsilon_max:g} at δ = {p.delta:g} per participant")
