"""`fi-stream status`: the federation as the log and the consumer groups show it.

    participants   registered (fi.registry), live (its consumer group has members), lag on
                   fi.queries, ε spent of budget (from its ledger, where the model dir is here)
    aggregators    the aggregator group's members and its lag on fi.queries (≈ open queries)
    results        the queries of the last RECENT result blocks per partition, by status
    dead letters   records held in fi.dlq

fi.queries and fi.results carry blocks (issue 13): offsets count records, so lags and
`queries_total` are in query BLOCKS (a block of one is one query); the recent results are
counted per query, each result block decoded.

Read-only: no consumer group is joined and nothing is committed.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import TopicPartition

from fi_stream.kafka import make_admin, make_consumer
from fi_stream.kafka.groups import describe_groups
from fi_stream.kafka.reading import partitions_of
from fi_stream.registry import RegistryView
from fi_stream.settings import Settings
from schemas import DecodeError
from schemas.blocks import RESULT_CODES, decode_result_block


def participant_group(settings: Settings, pid: str) -> str:
    return f"{settings.kafka.topic_prefix}fi.participant.{pid}"


def aggregator_group(settings: Settings) -> str:
    return f"{settings.kafka.topic_prefix}fi.aggregator"


def _ledger_epsilon(models: Path, pid: str) -> dict[str, Any] | None:
    """What the local ledger file counts: `answers` as spent (answered + reserved ahead),
    `answered` of them as of its last write (None: an older file), ε of `answers`."""
    from fi_stream_cli.budget import read_ledger

    try:
        reading = read_ledger(models / pid, holder=False)
    except (OSError, ValueError):
        return None
    if reading is None:
        return None
    return {"answers": reading.counted, "answered": reading.answered,
            "reserved_ahead": reading.reserved_ahead, "epsilon": reading.epsilon}


async def snapshot(settings: Settings, *, recent: int = 200,
                   models: Path = Path(".fi/models")) -> dict[str, Any]:
    """Everything `status` shows, as plain data (the --json document)."""
    topics = settings.topic_names
    registry = RegistryView(settings)
    await registry.start(catch_up_timeout=settings.kafka.connect_timeout_s)
    await registry.stop()
    admin = make_admin(settings)
    consumer = make_consumer(settings, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        qtps = await partitions_of(consumer, topics.queries)
        rtps = await partitions_of(consumer, topics.results)
        dtps = await partitions_of(consumer, topics.dlq)
        ends = await consumer.end_offsets([*qtps, *rtps, *dtps])
        starts = await consumer.beginning_offsets([*dtps, *rtps])

        async def lag(group: str) -> int | None:
            committed = await admin.list_consumer_group_offsets(group, partitions=qtps)
            if not committed:
                return None
            return int(sum(ends[tp] - max(0, committed[tp].offset) if tp in committed
                           else ends[tp] for tp in qtps))

        pids = sorted(registry.participants)
        groups = [participant_group(settings, p) for p in pids] + [aggregator_group(settings)]
        states = await describe_groups(admin, groups)
        participants = []
        for pid in pids:
            entry = registry.participants[pid]
            g = states.get(participant_group(settings, pid))
            participants.append({
                "id": pid, "active": entry.active, "tasks": entry.tasks,
                "model_version": entry.model_version,
                "live": bool(g and g.live), "group_state": g.state if g else "unknown",
                "lag": await lag(participant_group(settings, pid)),
                "budget": entry.budget.model_dump() if entry.budget else None,
                "ledger": _ledger_epsilon(models, pid),
            })
        agg = states.get(aggregator_group(settings))
        agg_lag = await lag(aggregator_group(settings))
        results = await _recent_results(consumer, rtps, starts, ends, recent)
    finally:
        await consumer.stop()
        await admin.close()
    return {
        "at_ms": int(time.time() * 1000), "topic_prefix": settings.kafka.topic_prefix,
        "participants": participants,
        # Queries the aggregator group has not committed past: open (or not yet read).
        "aggregators": {"members": agg.members if agg else 0,
                        "state": agg.state if agg else "unknown", "open_queries": agg_lag},
        "queries_total": sum(ends[tp] for tp in qtps),
        "recent_results": results,
        "dead_letters": sum(ends[tp] - starts[tp] for tp in dtps),
    }


async def _recent_results(consumer: Any, tps: list[TopicPartition],
                          starts: dict[TopicPartition, int], ends: dict[TopicPartition, int],
                          recent: int) -> dict[str, int]:
    """Statuses of the queries of the last `recent` result blocks of each partition (one
    count per query: a block of N results adds N)."""
    want = {tp: max(starts[tp], ends[tp] - recent) for tp in tps}
    want = {tp: off for tp, off in want.items() if off < ends[tp]}
    counts: Counter[str] = Counter()
    if not want:
        return {}
    consumer.assign(list(want))
    for tp, off in want.items():
        consumer.seek(tp, off)
    deadline = time.monotonic() + 10
    while want and time.monotonic() < deadline:
        got = await consumer.getmany(timeout_ms=200)
        for tp, records in got.items():
            for r in records:
                try:
                    block = decode_result_block(r.value)
                except DecodeError:
                    counts["undecodable"] += 1
                    continue
                codes, n = np.unique(block.status, return_counts=True)
                for code, k in zip(codes.tolist(), n.tolist(), strict=True):
                    counts[RESULT_CODES[code] if code < len(RESULT_CODES) else "undecodable"] += k
            if records and records[-1].offset + 1 >= ends[tp]:
                want.pop(tp, None)
    return dict(counts)


async def wait_ready(settings: Settings, n: int, timeout: float) -> list[str]:
    """Block until `n` registered participants have a live consumer group; their ids."""
    deadline = time.monotonic() + timeout
    admin = make_admin(settings)
    await admin.start()
    try:
        while True:
            registry = RegistryView(settings)
            await registry.start(catch_up_timeout=settings.kafka.connect_timeout_s)
            await registry.stop()
            pids = sorted(registry.participants)
            states = await describe_groups(admin, [participant_group(settings, p) for p in pids])
            live = [p for p in pids if states.get(participant_group(settings, p)) and
                    states[participant_group(settings, p)].live]
            if len(live) >= n:
                return live
            if time.monotonic() > deadline:
                from fi_stream.errors import KafkaSetupError

                raise KafkaSetupError(
                    f"only {len(live)} of {n} participants live after {timeout:g} s"
                    f" ({', '.join(live) or 'none'}); start them with"
                    " `fi-stream participant run --id ID`")
            await asyncio.sleep(0.5)
    finally:
        await admin.close()


def _ledger_cell(ledger: dict[str, Any]) -> str:
    """`answered + reserved ahead`: ε counts both until a clean stop releases the block."""
    if ledger.get("answers") is None:
        return "-"
    if ledger.get("answered") is None:
        return f"{ledger['answers']:,}"
    return f"{ledger['answered']:,} + {ledger['reserved_ahead']:,}"


def render(doc: dict[str, Any]) -> Any:
    """The snapshot as rich tables (participants, then one line per other section)."""
    from rich.console import Group
    from rich.table import Table

    t = Table(title=f"participants ({doc['topic_prefix'] or 'no prefix'})", expand=False)
    for col in ("id", "live", "lag (query blocks)", "ε counted / budget",
                "answered + reserved (ledger)", "model"):
        t.add_column(col)
    for p in doc["participants"]:
        budget = p["budget"]["epsilon_max"] if p["budget"] else None
        ledger = p["ledger"] or {}
        eps = ledger.get("epsilon")
        t.add_row(
            p["id"], "[green]live[/]" if p["live"] else f"[red]{p['group_state'].lower()}[/]",
            "-" if p["lag"] is None else f"{p['lag']:,}",
            (f"{eps:.4g}" if eps is not None else "?") + (f" / {budget:g}" if budget else ""),
            _ledger_cell(ledger),
            p["model_version"])
    a = doc["aggregators"]
    res = ", ".join(f"{k} {v:,}" for k, v in sorted(doc["recent_results"].items())) or "none"
    summary = Table.grid(padding=(0, 2))
    summary.add_row("aggregators", f"{a['members']} member(s), group {a['state'].lower()}")
    summary.add_row("open query blocks", "-" if a["open_queries"] is None
                    else f"{a['open_queries']:,} (of {doc['queries_total']:,} sent)")
    summary.add_row("recent results", res)
    summary.add_row("dead letters", f"{doc['dead_letters']:,}")
    return Group(t, summary)
