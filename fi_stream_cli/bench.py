"""`fi-stream bench …`: measurements that write JSON. Ratios are measured side by side in one
run; absolute numbers are only comparable on the same machine."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from fi_stream_cli.runtime import run_async, settle_heap

if TYPE_CHECKING:  # torch, numpy and the engine are imported by the commands that use them
    import numpy as np

    from fi_stream.models import ModelSpec

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (JSON out).")
console = Console(stderr=True)

MODEL_NAMES = ("digits-mlp", "resnet18-c")


def _model_spec(name: str) -> ModelSpec:
    from fi_stream.models import ModelSpec

    if name == "digits-mlp":
        return ModelSpec(architecture="digits-mlp", task="digits", version="bench",
                         input_shape=(64,), num_classes=10)
    return ModelSpec(architecture="resnet18-c", task="cifar", version="bench",
                     input_shape=(3, 32, 32), num_classes=10)


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


def _rate(step: Callable[[], int], seconds: float, sync: Callable[[], None]) -> float:
    """Items per second of `step` (which returns the items it did), after a warm-up."""
    step()
    step()
    sync()
    items, started = 0, time.perf_counter()
    while True:
        items += step()
        if time.perf_counter() - started >= seconds:
            break
    sync()
    return items / (time.perf_counter() - started)


def _records(spec: ModelSpec, n: int, rng: np.random.Generator) -> list[tuple[int, bytes]]:
    import numpy as np

    from schemas import Query, Tensor, encode

    now = int(time.time() * 1000)
    return [
        (i % 4, encode(Query(query_id=f"q{i}", task=spec.task, created_at_ms=now,
                             deadline_ms=now + 3_600_000,
                             input=Tensor.from_numpy(rng.random(spec.input_shape,
                                                                dtype=np.float32)))))
        for i in range(n)
    ]


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
    """Raw forward (ceiling) vs. the participant engine (encoded queries → encoded, signed
    ResponseBatches, pipelined as in the service) vs. one query at a time; then the
    engine with K teachers side by side (same batch, unpipelined)."""
    import numpy as np
    import torch
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from consumers.participant import INLINE_WORK_S
    from fi_stream.engine import InferenceEngine, Precision, Signer, assemble, pick_device, prepare
    from fi_stream.models import build
    from fi_stream.privacy import Mechanism

    if model not in MODEL_NAMES or precision not in ("fp32", "bf16"):
        raise typer.BadParameter(f"--model in {', '.join(MODEL_NAMES)}, --precision fp32|bf16")
    spec = _model_spec(model)
    dev = pick_device(device)
    prec: Precision = "bf16" if precision == "bf16" else "fp32"
    torch.manual_seed(0)
    module = build(spec)
    if len(spec.input_shape) == 3:
        module = module.to(memory_format=torch.channels_last)
    engine = InferenceEngine(module, spec, Mechanism(clip_norm=1.0, noise_multiplier=0.3),
                             dev, prec, compile_model)
    try:
        counts = sorted({int(k) for k in teachers.split(",")})
    except ValueError:
        raise typer.BadParameter(f"--teachers takes K values like 1,8; got {teachers!r}"
                                 ) from None
    signer = Signer(participant_id="bench", spec=spec, key=Ed25519PrivateKey.generate(),
                    privacy=engine.mechanism.to_privacy())
    rng = np.random.default_rng(0)
    records = _records(spec, batch, rng)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    x = torch.rand(batch, *spec.input_shape, device=dev)

    def raw() -> int:
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16,
                                                    enabled=prec == "bf16"):
            engine.module(x)
        return batch

    def compute(prepared: Any) -> int:
        n = len(prepared.answerable)
        outputs = engine.infer(prepared.inputs)
        assemble(prepared, range(n), outputs, signer, int(time.time() * 1000))
        return n

    pool = ThreadPoolExecutor(max_workers=1)
    in_flight: list[Any] = []
    paths = {"inline": 0, "thread": 0}
    last_work_s = [0.0]

    def timed(prepared: Any) -> int:
        began = time.thread_time()
        n = compute(prepared)
        last_work_s[0] = time.thread_time() - began
        return n

    def pipelined() -> int:
        # The participant's rule (ParticipantService._publish): CPU work under
        # INLINE_WORK_S a batch runs inline, after the decode; longer work, or a GPU, goes
        # to the worker thread while the next batch is decoded. (The service also hands
        # off a batch whose ledger write fsyncs; the bench has no ledger.)
        prepared = prepare(records, spec, int(time.time() * 1000))
        if dev.type == "cpu" and last_work_s[0] < INLINE_WORK_S and not in_flight:
            paths["inline"] += 1
            return timed(prepared)
        paths["thread"] += 1
        done = in_flight.pop().result() if in_flight else 0
        in_flight.append(pool.submit(timed, prepared))
        return done

    naive_records = records[: min(batch, 2000)]

    def naive() -> int:
        for item in naive_records[:256]:
            prepared = prepare([item], spec, int(time.time() * 1000))
            assemble(prepared, [0], engine.infer(prepared.inputs), signer,
                     int(time.time() * 1000))
        return min(256, len(naive_records))

    console.print(f"bench engine: {model} batch {batch} on {dev} ({prec})")
    result: dict[str, Any] = {
        "benchmark": "engine", "model": model, "batch": batch, "device": str(dev),
        "precision": prec, "compile": compile_model, "seconds": seconds, "machine": machine(),
        "raw_items_per_s": _rate(raw, seconds, sync),
        "engine_items_per_s": _rate(pipelined, seconds, sync),
        "naive_items_per_s": _rate(naive, seconds, sync),
    }
    pool.shutdown()
    result["engine_batches_inline"], result["engine_batches_thread"] = (
        paths["inline"], paths["thread"])
    result["engine_over_raw"] = result["engine_items_per_s"] / result["raw_items_per_s"]
    result["engine_over_naive"] = result["engine_items_per_s"] / result["naive_items_per_s"]
    result["teachers"] = _bench_teachers(spec, counts, records, dev, prec, compile_model,
                                         seconds, sync)
    report(result, json_out)


def _bench_teachers(spec: Any, counts: list[int], records: list[tuple[int, bytes]],
                    dev: Any, prec: Any, compile_model: bool, seconds: float,
                    sync: Any) -> dict[str, dict[str, float]]:
    """Items/s of decode + engine + sign for each K, and the ratio to the first K (1)."""
    import torch
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from fi_stream.engine import InferenceEngine, Signer, assemble, prepare
    from fi_stream.models import build
    from fi_stream.models.ensemble import TeacherEnsemble
    from fi_stream.privacy import Mechanism

    out: dict[str, dict[str, float]] = {}
    for k in counts:
        gen = torch.Generator().manual_seed(k)
        if k == 1:
            module: torch.nn.Module = build(spec, generator=gen)
            mech = Mechanism(clip_norm=1.0, noise_multiplier=0.3)
        else:
            module = TeacherEnsemble.from_modules(
                [build(spec, generator=gen) for _ in range(k)], spec.num_classes)
            mech = Mechanism(name="teachers", noise_multiplier=0.3, teachers=k)
        eng = InferenceEngine(module, spec, mech, dev, prec, compile_model)
        signer = Signer(participant_id="bench", spec=spec, key=Ed25519PrivateKey.generate(),
                        privacy=mech.to_privacy())

        def step(eng: InferenceEngine = eng, signer: Signer = signer) -> int:
            prepared = prepare(records, spec, int(time.time() * 1000))
            n = len(prepared.answerable)
            assemble(prepared, range(n), eng.infer(prepared.inputs), signer,
                     int(time.time() * 1000))
            return n

        out[str(k)] = {"engine_items_per_s": _rate(step, seconds, sync)}
    base = out[str(counts[0])]["engine_items_per_s"]
    for row in out.values():
        row["ratio_to_first"] = row["engine_items_per_s"] / base
    return out


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
    and encoding the Result): query by query vs. `soft_vote_in_batches`, side by side.
    (48 queries per poll is what the aggregator sees at ~1,400 queries/s.)"""
    import numpy as np

    from fi_stream.join import Answer, OpenQuery
    from fi_stream.results import IncentiveWindow, build_result, soft_vote_in_batches
    from schemas import Query, Tensor, encode

    rng = np.random.default_rng(0)
    ids = [f"p{k + 1}" for k in range(participants)]
    now = int(time.time() * 1000)
    joins = []
    for i in range(batch):
        q = Query(query_id=f"q{i}", task="digits", created_at_ms=now, deadline_ms=now + 5000,
                  input=Tensor.from_numpy(np.zeros(64, np.float32)))
        oq = OpenQuery(q, 0, i, frozenset(ids))
        for k, pid in enumerate(ids):
            oq.answers[pid] = Answer(pid, rng.normal(0.1, 0.3, 10).astype(np.float32),
                                     0, i, k, now)
        joins.append(oq)

    def emit(batched: bool) -> Callable[[], int]:
        def step() -> int:
            window = IncentiveWindow(0, 0, now, "loo_agreement")
            pre = soft_vote_in_batches(joins) if batched else {}
            for oq in joins:
                b = pre.get(oq.query.query_id)
                result, got, outputs = build_result(oq, strategy="soft_vote",
                                                    completed_at_ms=now, window=window.ref,
                                                    batched=b)
                window.add(result, got, outputs, b)
                encode(result)
            return len(joins)
        return step

    result: dict[str, Any] = {
        "benchmark": "emit", "participants": participants, "batch": batch,
        "seconds": seconds, "machine": machine(),
        "per_query_per_s": _rate(emit(False), seconds, lambda: None),
        "batched_per_s": _rate(emit(True), seconds, lambda: None),
    }
    result["batched_over_per_query"] = result["batched_per_s"] / result["per_query_per_s"]
    report(result, json_out)


# -- end to end ---------------------------------------------------------------------------------

#: The open-loop load generator wakes at most this often (about 3 queries per wake at 1,400/s).
PACING_TICK_S = 0.002


def _percentiles(values: np.ndarray[Any, Any]) -> dict[str, float]:
    import numpy as np

    return {"p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99))}


async def _drive(settings: Any, *, rate: float, duration: float, warmup: float,
                 deadline_ms: int, max_in_flight: int) -> dict[str, Any]:
    """Offer `rate` queries/s (0: as fast as `max_in_flight` allows) for `warmup` + `duration`
    seconds; only queries sent after the warm-up count. Latency is query created → result
    received by the client."""
    import asyncio

    import numpy as np

    from fi_stream.clock import now_ms
    from fi_stream.models import load_digits_split
    from producers.query_client import QueryClient

    xs = load_digits_split().x_test
    latencies: list[float] = []
    joins: list[float] = []  # query created -> result completed by the aggregator
    created_at: list[int] = []
    statuses: dict[str, int] = {}
    missed = 0
    on_time = 0
    async with QueryClient(settings, client_id="bench", quorum=1) as client:
        await client.infer(xs[0], deadline_ms=30_000)  # the pipeline is live
        # This process trained the models: without this its full collections pause the
        # load generator for 200-300 ms, a latency spike the services did not cause.
        settle_heap()
        slots = asyncio.Semaphore(max_in_flight)
        tasks: set[asyncio.Task[None]] = set()

        async def track(fut: Any, created: int, measured: bool) -> None:
            nonlocal missed, on_time
            try:
                result = await fut
            finally:
                slots.release()
            if not measured:
                return
            latencies.append(now_ms() - created)
            joins.append(result.completed_at_ms - created)
            created_at.append(created)
            statuses[result.status] = statuses.get(result.status, 0) + 1
            late = result.status != "complete" or result.completed_at_ms > result.deadline_ms
            missed += late
            on_time += not late

        started = time.perf_counter()
        sent = measured_sent = 0
        while (elapsed := time.perf_counter() - started) < warmup + duration:
            if rate > 0 and sent >= rate * elapsed:
                # Whatever fell due meanwhile goes out in one burst: a wake-up per query
                # would cost the load generator more than the queries themselves.
                await asyncio.sleep(max(PACING_TICK_S, (sent + 1) / rate - elapsed))
                continue
            await slots.acquire()
            measured = elapsed >= warmup
            query, fut = await client.submit(xs[sent % len(xs)], deadline_ms=deadline_ms)
            task = asyncio.create_task(track(fut, query.created_at_ms, measured))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
            measured_sent += measured
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - started - warmup
    lat = np.asarray(latencies, dtype=np.float64)
    delivery = lat - np.asarray(joins, dtype=np.float64)
    return {
        "offered_rate": rate or None, "max_in_flight": max_in_flight,
        "warmup_s": warmup, "sent": measured_sent, "results": len(latencies),
        # Goodput: complete results within their deadline, per second.
        "queries_per_s": on_time / wall,
        "results_per_s": len(latencies) / wall,
        "latency_ms": {"mean": float(lat.mean()), **_percentiles(lat)},
        # Where it goes: until the aggregator completes the result (participants + join),
        # and from there until the client reads it (transaction commit + fetch).
        "join_ms": _percentiles(np.asarray(joins, dtype=np.float64)),
        "delivery_ms": _percentiles(delivery),
        "deadline_miss_rate": missed / max(1, len(latencies)), "statuses": statuses,
        "per_second": _per_second(np.asarray(created_at), lat),
    }


def _per_second(created_ms: np.ndarray[Any, Any], latency_ms: np.ndarray[Any, Any]
                ) -> list[dict[str, float]]:
    """Latency by the second the query was created in: a tail made of a few slow seconds
    (a stall) reads differently from one spread over the whole run (queueing)."""
    import numpy as np

    if not len(created_ms):
        return []
    second = (created_ms - created_ms.min()) // 1000
    return [{"second": int(s), "queries": int((second == s).sum()),
             **_percentiles(latency_ms[second == s])} for s in np.unique(second)]


@bench_app.command("e2e")
def bench_e2e(
    participants: Annotated[int, typer.Option(min=1, help="Participant processes.")] = 5,
    aggregators: Annotated[int, typer.Option(
        min=1, help="Aggregator processes in the group (they share the partitions).")] = 1,
    rate: Annotated[float, typer.Option(
        help="Offered queries/s; 0 finds the sustained maximum, then measures latency at "
             "half of it.")] = 0.0,
    duration: Annotated[float, typer.Option(min=1.0, help="Measured seconds per run.")] = 10.0,
    warmup: Annotated[float, typer.Option(
        min=0.0, help="Seconds of load before measuring: new topics, first transactions and "
                      "cold code paths cost a few hundred ms once, and on 2 busy cores the "
                      "backlog they leave takes ~3 s to drain (see `per_second`).")] = 5.0,
    deadline_ms: Annotated[int, typer.Option(min=1, help="Each query's time budget, ms.")
                           ] = 5_000,
    naive: Annotated[bool, typer.Option(help="Also run the naive pipeline for the ratio.")] = True,
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
    keep: Annotated[bool, typer.Option(help="Keep each run's topics afterwards.")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the JSON here.")
                        ] = None,
) -> None:
    """The whole system on the local broker (or FI_KAFKA_BOOTSTRAP), one process per service:
    batched participants vs. a naive pipeline (one forward per query, one awaited produce per
    response, one commit per message). Each run has its own topics (prefix bench-*)."""
    from fi_stream.kafka import delete_topics
    from fi_stream.settings import ParticipantSettings, load_settings
    from fi_stream_cli.federation import LocalFederation, fresh_settings, local_broker

    base = load_settings()

    async def run(name: str, participant: dict[str, Any], offered: float,
                  in_flight: int = max_in_flight) -> dict[str, Any]:
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
            console.print(f"{name}: offering {offered or 'max'} queries/s for {duration:.0f} s")
            return await _drive(settings, rate=offered, duration=duration, warmup=warmup,
                                deadline_ms=deadline_ms, max_in_flight=in_flight)
        finally:
            await fed.stop()
            if not keep:
                await delete_topics(settings)

    async def main() -> dict[str, Any]:
        out: dict[str, Any] = {"benchmark": "e2e", "participants": participants,
                               "aggregators": aggregators,
                               "max_wait_ms": max_wait_ms,
                               "duration_s": duration, "warmup_s": warmup,
                               "deadline_ms": deadline_ms,
                               "machine": machine()}
        async with local_broker(base):
            # The service's default micro-batch (ParticipantSettings.max_batch), not a
            # bench-only one.
            batched = {"max_batch": ParticipantSettings().max_batch, "max_wait_ms": max_wait_ms}
            out["max_batch"] = batched["max_batch"]
            if rate > 0:
                out["batched"] = await run("batched", batched, rate)
            else:
                out["batched_max"] = await run("batched", batched, 0)
                half = out["batched_max"]["queries_per_s"] / 2
                out["batched_half_rate"] = await run("batched", batched, half)
            if naive:
                out["naive_max"] = await run(
                    "naive", {"pipeline": "naive", "max_batch": 1, "max_wait_ms": 0}, 0,
                    naive_in_flight)
                top = out.get("batched_max", out.get("batched"))
                out["throughput_ratio"] = (top["queries_per_s"]
                                           / max(out["naive_max"]["queries_per_s"], 1e-9))
            if control:
                # The batched pipeline at max_batch 1: still pipelined (acks awaited off the
                # path, commits every second) but one query per forward and per record. It
                # splits the ratio: batching = batched / control, round trips = control / naive.
                out["control_max"] = await run(
                    "control", {"max_batch": 1, "max_wait_ms": 0}, 0, naive_in_flight)
                top = out["batched_max"] if "batched_max" in out else out["batched"]
                control_qps = max(out["control_max"]["queries_per_s"], 1e-9)
                out["batching_ratio"] = top["queries_per_s"] / control_qps
                if naive:
                    out["round_trip_ratio"] = (control_qps
                                               / max(out["naive_max"]["queries_per_s"], 1e-9))
        return out

    result = run_async(main)
    report(result, json_out)
