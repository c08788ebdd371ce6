"""`fi-stream bench …`: measurements that write JSON. Ratios are measured side by side in one
run; absolute numbers are only comparable on the same machine.

This module handles the arguments and writes the JSON; the timed steps are in
`fi_stream_cli.measure`, the load generator of `bench e2e` in `producers.load`."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from fi_stream_cli.measure import MODEL_NAMES
from fi_stream_cli.runtime import run_async, settle_heap

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (JSON out).")
console = Console(stderr=True)


def machine() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"platform": platform.platform(), "cpus": os.cpu_count(),
                            "python": platform.python_version(), "torch": torch.__version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def report(doc: dict[str, Any], json_out: Path | None) -> None:
    """Print a benchmark's JSON document, and write it to `json_out` when given."""
    text = json.dumps(doc, indent=2)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(text + "\n")
    print(text)


@bench_app.command("engine")
def bench_engine(
    model: Annotated[str, typer.Option(help=f"One of {', '.join(MODEL_NAMES)}.")
                     ] = "digits-mlp",
    batch: Annotated[int, typer.Option(min=1, help="Queries per batch.")] = 1024,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    precision: Annotated[str, typer.Option(help="fp32 or bf16 (autocast).")] = "fp32",
    seconds: Annotated[float, typer.Option(min=0.1, help="Seconds per measurement.")] = 3.0,
    compile_model: Annotated[bool, typer.Option("--compile", help="torch.compile")] = False,
    teachers: Annotated[str, typer.Option(
        help="Teacher counts K to compare (comma-separated); K = 1 is one model "
             "(gaussian), K > 1 a teacher ensemble run as one vmapped call.")] = "1,8",
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the JSON here.")
                        ] = None,
) -> None:
    """Raw forward (ceiling) vs. the participant engine (a query block of --batch queries →
    a signed response block, pipelined as in the service) vs. one query (a block of one) at
    a time; then the engine with K teachers side by side (same block, unpipelined)."""
    from consumers.participant import INLINE_WORK_S
    from fi_stream.engine import Precision, pick_device
    from fi_stream_cli import measure

    if model not in MODEL_NAMES or precision not in ("fp32", "bf16"):
        raise typer.BadParameter(f"--model in {', '.join(MODEL_NAMES)}, --precision fp32|bf16")
    try:
        counts = sorted({int(k) for k in teachers.split(",")})
    except ValueError:
        raise typer.BadParameter(f"--teachers takes K values like 1,8; got {teachers!r}"
                                 ) from None
    spec = measure.model_spec(model)
    dev = pick_device(device)
    prec: Precision = "bf16" if precision == "bf16" else "fp32"
    console.print(f"bench engine: {model} batch {batch} on {dev} ({prec})")
    result: dict[str, Any] = {
        "benchmark": "engine", "model": model, "batch": batch, "device": str(dev),
        "precision": prec, "compile": compile_model, "seconds": seconds, "machine": machine(),
        **measure.engine_rates(spec, dev, prec, compile_model, batch, seconds, INLINE_WORK_S),
    }
    result["teachers"] = measure.teacher_rates(spec, counts, dev, prec, compile_model, batch,
                                               seconds)
    report(result, json_out)


# -- the aggregator's emit ---------------------------------------------------------------------

@bench_app.command("emit")
def bench_emit(
    participants: Annotated[int, typer.Option(min=1, help="Answers per query.")] = 5,
    batch: Annotated[int, typer.Option(min=1, help="Queries settled in one poll.")] = 48,
    seconds: Annotated[float, typer.Option(min=0.1, help="Seconds per measurement.")] = 3.0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the JSON here.")
                        ] = None,
) -> None:
    """The aggregator's work per settled query (soft vote, loo-agreement tallies, building
    the Results and encoding their result block): query by query vs.
    `soft_vote_in_batches`, side by side.
    (48 queries per poll is what the aggregator sees at ~1,400 queries/s.)"""
    from fi_stream_cli import measure

    result: dict[str, Any] = {
        "benchmark": "emit", "participants": participants, "batch": batch,
        "seconds": seconds, "machine": machine(),
        **measure.emit_rates(participants, batch, seconds),
    }
    result["batched_over_per_query"] = result["batched_per_s"] / result["per_query_per_s"]
    report(result, json_out)


# -- end to end ---------------------------------------------------------------------------------

@bench_app.command("e2e")
def bench_e2e(
    participants: Annotated[int, typer.Option(min=1, help="Participant processes.")] = 5,
    aggregators: Annotated[int, typer.Option(
        min=1, help="Aggregator processes in the group (they share the partitions).")] = 1,
    rate: Annotated[float, typer.Option(
        help="Offered queries/s; 0 finds the sustained maximum, then measures latency at "
             "half of it (for each batched run).")] = 0.0,
    duration: Annotated[float, typer.Option(min=1.0, help="Measured seconds per run.")] = 10.0,
    warmup: Annotated[float, typer.Option(
        min=0.0, help="Seconds of load before measuring: new topics, first transactions and "
                      "cold code paths cost a few hundred ms once, and on 2 busy cores the "
                      "backlog they leave takes ~3 s to drain (see `per_second`).")] = 5.0,
    deadline_ms: Annotated[int, typer.Option(min=1, help="Each query's time budget, ms.")
                           ] = 5_000,
    naive: Annotated[bool, typer.Option(help="Also run the naive pipeline for the ratio.")] = True,
    block_one: Annotated[bool, typer.Option(
        "--block-one/--no-block-one",
        help="Also run the batched pipeline fed blocks of one (the block-size ratio).")
                         ] = True,
    control: Annotated[bool, typer.Option(
        help="Also run the batched pipeline at max_batch 1 (separates batching from round "
             "trips).")] = True,
    max_in_flight: Annotated[int, typer.Option(
        min=1, help="Unanswered queries the load generator allows (closed loop).")] = 1000,
    naive_in_flight: Annotated[int, typer.Option(
        min=1, help="The same for the naive pipeline: at ~100 queries/s, 1,000 in flight "
                    "would queue past every deadline and its goodput would read 0.")] = 50,
    max_wait_ms: Annotated[int, typer.Option(
        min=0, help="Participants' micro-batch wait (batched pipeline).")] = 30,
    block: Annotated[int, typer.Option(
        min=1, max=65_536, help="Queries per query block the load generator sends to the "
        "batched pipeline's main run (the block-one, naive and control runs are fed blocks "
        "of one: one query per record).")] = 1,
    keep: Annotated[bool, typer.Option(help="Keep each run's topics afterwards.")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the JSON here.")
                        ] = None,
) -> None:
    """The whole system on the local broker (or FI_KAFKA_BOOTSTRAP), one process per service,
    side by side in one invocation: the batched pipeline fed query blocks of --block
    queries, the same pipeline fed blocks of one, the naive pipeline (blocks of one; one
    forward per query, one awaited produce per response, one commit per message) and the
    control (batched at max_batch 1). Each run has its own topics (prefix bench-*).

    JSON keys (each run: the load generator's summary, `producers.load.drive`):
    `block`, `max_batch`: the run parameters. With --rate 0: `batched_max` and
    `batched_half_rate` (blocks of --block: the sustained maximum, then latency at half
    of it), `block1_max` and `block1_half_rate` (the same, blocks of one); with --rate R:
    `batched` and `block1` at R. `naive_max`, `control_max`: closed loop, blocks of one.
    Ratios of goodput (queries_per_s; the max runs, or the --rate runs):
    `block_ratio` = blocks of --block / blocks of one, `block1_over_naive` = blocks of one /
    naive, `throughput_ratio` = blocks of --block / naive, `batching_ratio` = blocks of
    --block / control, `round_trip_ratio` = control / naive. With --block 1 the block-one
    run is the batched run itself (`block1_*` repeat it, `block1_same_run` is true)."""
    from fi_stream.kafka import delete_topics
    from fi_stream.settings import ParticipantSettings, load_settings
    from fi_stream_cli.federation import LocalFederation, fresh_settings, local_broker
    from producers.load import drive

    base = load_settings()

    async def run(name: str, participant: dict[str, Any], offered: float,
                  in_flight: int = max_in_flight, rows: int = block) -> dict[str, Any]:
        run_id = f"bench-{name}-{time.strftime('%H%M%S')}"
        # Throughput, not privacy: a budget no run can exhaust (the default, ε = 100 for
        # 1,000 answers, would decline all but the first second's queries).
        settings = fresh_settings(base, f"{run_id}.", participant=participant,
                                  privacy={"noise_multiplier": 0.3, "epsilon_max": 1e12})
        fed = LocalFederation(settings, Path(".fi/bench") / run_id)
        ids = [f"p{k + 1}" for k in range(participants)]
        fed.train(ids, alpha=0.3, seed=0)
        try:
            await fed.start(ids, aggregators=aggregators)
            console.print(f"{name}: offering {offered or 'max'} queries/s in blocks of {rows}"
                          f" for {duration:.0f} s")
            # This process trained the models: without settling its heap, full collections
            # pause the load generator for 200-300 ms, a latency spike the services did not
            # cause.
            return await drive(settings, rate=offered, duration=duration, warmup=warmup,
                               deadline_ms=deadline_ms, max_in_flight=max(in_flight, rows),
                               block=rows, on_live=settle_heap)
        finally:
            await fed.stop()
            if not keep:
                await delete_topics(settings)

    async def batched_runs(key: str, participant: dict[str, Any], rows: int
                           ) -> dict[str, Any]:
        """`key` (at --rate) or `key`_max and `key`_half_rate (--rate 0), blocks of `rows`."""
        name = "batched" if rows == block else "block1"
        if rate > 0:
            return {key: await run(name, participant, rate, rows=rows)}
        top = await run(name, participant, 0, rows=rows)
        half = top["queries_per_s"] / 2
        return {f"{key}_max": top,
                f"{key}_half_rate": await run(name, participant, half, rows=rows)}

    async def main() -> dict[str, Any]:
        out: dict[str, Any] = {"benchmark": "e2e", "participants": participants,
                               "aggregators": aggregators,
                               "max_wait_ms": max_wait_ms, "block": block,
                               "duration_s": duration, "warmup_s": warmup,
                               "deadline_ms": deadline_ms,
                               "machine": machine()}
        async with local_broker(base):
            # The service's default micro-batch (ParticipantSettings.max_batch), not a
            # bench-only one.
            batched = {"max_batch": ParticipantSettings().max_batch, "max_wait_ms": max_wait_ms}
            out["max_batch"] = batched["max_batch"]
            out.update(await batched_runs("batched", batched, block))
            if block_one and block == 1:
                out["block1_same_run"] = True
                out.update({k.replace("batched", "block1"): v for k, v in list(out.items())
                            if k.startswith("batched")})
            elif block_one:
                out.update(await batched_runs("block1", batched, 1))
            if naive:
                out["naive_max"] = await run(
                    "naive", {"pipeline": "naive", "max_batch": 1, "max_wait_ms": 0}, 0,
                    naive_in_flight, rows=1)
            if control:
                # The batched pipeline at max_batch 1: still pipelined (acks awaited off the
                # path, commits every second) but one query per forward and per record. It
                # splits the ratio: batching = batched / control, round trips = control / naive.
                out["control_max"] = await run(
                    "control", {"max_batch": 1, "max_wait_ms": 0}, 0, naive_in_flight, rows=1)
        out.update(ratios(out))
        return out

    result = run_async(main)
    report(result, json_out)


def ratios(out: dict[str, Any]) -> dict[str, float]:
    """The goodput ratios of `bench e2e` between the runs `out` holds (see its help)."""

    def qps(key: str) -> float | None:
        run = out.get(f"{key}_max", out.get(key))
        return None if run is None else max(run["queries_per_s"], 1e-9)

    pairs = {"block_ratio": ("batched", "block1"), "block1_over_naive": ("block1", "naive"),
             "throughput_ratio": ("batched", "naive"), "batching_ratio": ("batched", "control"),
             "round_trip_ratio": ("control", "naive")}
    got = {name: (qps(a), qps(b)) for name, (a, b) in pairs.items()}
    return {name: a / b for name, (a, b) in got.items() if a is not None and b is not None}
