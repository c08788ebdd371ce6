"""The timed steps of `fi-stream bench engine` and `bench emit`: each function builds what
its step needs, then measures items per second with `rate`. The commands in
`fi_stream_cli.bench` only handle arguments and write the JSON."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch, numpy and the engine are imported by the functions that use them
    import numpy as np
    import torch

    from fi_stream.engine import Precision
    from fi_stream.models import ModelSpec

MODEL_NAMES = ("digits-mlp", "resnet18-c")


def model_spec(name: str) -> ModelSpec:
    from fi_stream.models import ModelSpec

    if name == "digits-mlp":
        return ModelSpec(architecture="digits-mlp", task="digits", version="bench",
                         input_shape=(64,), num_classes=10)
    return ModelSpec(architecture="resnet18-c", task="cifar", version="bench",
                     input_shape=(3, 32, 32), num_classes=10)


def rate(step: Callable[[], int], seconds: float, sync: Callable[[], None]) -> float:
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


def records(spec: ModelSpec, n: int, rng: np.random.Generator, block: int | None = None
            ) -> list[tuple[int, bytes]]:
    """(partition, encoded query block) items carrying `n` random queries in blocks of
    `block` rows (default: one block of n), spread over 4 partitions."""
    import numpy as np

    from schemas.blocks import encode_query_block, query_block

    now = int(time.time() * 1000)
    size = block or n
    return [
        (k % 4, encode_query_block(query_block(
            f"bench-{k}", spec.task,
            rng.random((min(size, n - start), *spec.input_shape), dtype=np.float32),
            created_at_ms=now, deadline_ms=now + 3_600_000)))
        for k, start in enumerate(range(0, n, size))
    ]


def engine_rates(spec: ModelSpec, dev: torch.device, prec: Precision, compile_model: bool,
                 batch: int, seconds: float, inline_work_s: float) -> dict[str, Any]:
    """Raw forward (ceiling) vs. the participant engine (a query block of `batch` → signed
    response block, pipelined as in the service) vs. one query (a block of one) at a time."""
    import numpy as np
    import torch
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from fi_stream.engine import InferenceEngine, Signer, assemble, prepare
    from fi_stream.models import build
    from fi_stream.privacy import Mechanism

    torch.manual_seed(0)
    module = build(spec)
    if len(spec.input_shape) == 3:
        module = module.to(memory_format=torch.channels_last)
    engine = InferenceEngine(module, spec, Mechanism(clip_norm=1.0, noise_multiplier=0.3),
                             dev, prec, compile_model)
    signer = Signer(participant_id="bench", spec=spec, key=Ed25519PrivateKey.generate(),
                    privacy=engine.mechanism.to_privacy())
    items = records(spec, batch, np.random.default_rng(0))  # one block of `batch` queries
    sync = sync_of(dev)
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
        prepared = prepare(items, spec, int(time.time() * 1000))
        if dev.type == "cpu" and last_work_s[0] < inline_work_s and not in_flight:
            paths["inline"] += 1
            return timed(prepared)
        paths["thread"] += 1
        done = in_flight.pop().result() if in_flight else 0
        in_flight.append(pool.submit(timed, prepared))
        return done

    # One query per record (a block of one), one forward and one signed record each.
    naive_records = records(spec, min(batch, 256), np.random.default_rng(1), block=1)

    def naive() -> int:
        for item in naive_records:
            prepared = prepare([item], spec, int(time.time() * 1000))
            assert prepared.inputs is not None  # the bench's items are all answerable
            assemble(prepared, [0], engine.infer(prepared.inputs), signer,
                     int(time.time() * 1000))
        return len(naive_records)

    out = {"raw_items_per_s": rate(raw, seconds, sync),
           "engine_items_per_s": rate(pipelined, seconds, sync),
           "naive_items_per_s": rate(naive, seconds, sync)}
    pool.shutdown()
    out["engine_batches_inline"], out["engine_batches_thread"] = (
        paths["inline"], paths["thread"])
    out["engine_over_raw"] = out["engine_items_per_s"] / out["raw_items_per_s"]
    out["engine_over_naive"] = out["engine_items_per_s"] / out["naive_items_per_s"]
    return out


def sync_of(dev: torch.device) -> Callable[[], None]:
    import torch

    return torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)


def teacher_rates(spec: ModelSpec, counts: list[int], dev: torch.device, prec: Precision,
                  compile_model: bool, batch: int, seconds: float
                  ) -> dict[str, dict[str, float]]:
    """Items/s of decode + engine + sign for each K, and the ratio to the first K (1)."""
    import numpy as np
    import torch
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from fi_stream.engine import InferenceEngine, Signer, assemble, prepare
    from fi_stream.models import build
    from fi_stream.models.ensemble import TeacherEnsemble
    from fi_stream.privacy import Mechanism

    items = records(spec, batch, np.random.default_rng(0))
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
            prepared = prepare(items, spec, int(time.time() * 1000))
            n = len(prepared.answerable)
            assert prepared.inputs is not None  # the bench's items are all answerable
            assemble(prepared, range(n), eng.infer(prepared.inputs), signer,
                     int(time.time() * 1000))
            return n

        out[str(k)] = {"engine_items_per_s": rate(step, seconds, sync_of(dev))}
    base = out[str(counts[0])]["engine_items_per_s"]
    for row in out.values():
        row["ratio_to_first"] = row["engine_items_per_s"] / base
    return out


def emit_rates(participants: int, batch: int, seconds: float) -> dict[str, float]:
    """The aggregator's work per settled query, query by query vs. `soft_vote_in_batches`
    (the poll's queries are the rows of one query block; their results one result block)."""
    import numpy as np

    from fi_stream.join import Answer, OpenQuery
    from fi_stream.results import IncentiveWindow, build_result, soft_vote_in_batches
    from schemas import Result
    from schemas.blocks import encode_result_block, query_block
    from schemas.blocks.convert import queries_of, result_block_of

    rng = np.random.default_rng(0)
    ids = [f"p{k + 1}" for k in range(participants)]
    now = int(time.time() * 1000)
    joins = []
    block = query_block("emit", "digits", np.zeros((batch, 64), np.float32),
                        created_at_ms=now, deadline_ms=now + 5000)
    for i, q in enumerate(queries_of(block)):
        oq = OpenQuery(q, 0, 0, frozenset(ids))
        for k, pid in enumerate(ids):
            # participant k's response record (offset k) answers the block; row i is query i
            oq.answers[pid] = Answer(pid, rng.normal(0.1, 0.3, 10).astype(np.float32),
                                     0, k, i, now)
        joins.append(oq)

    def emit(batched: bool) -> Callable[[], int]:
        def step() -> int:
            window = IncentiveWindow(0, 0, now, "loo_agreement")
            pre = soft_vote_in_batches(joins) if batched else {}
            results: list[Result] = []
            for oq in joins:
                b = pre.get(oq.query.query_id)
                result, got, outputs = build_result(oq, strategy="soft_vote",
                                                    completed_at_ms=now, window=window.ref,
                                                    batched=b)
                window.add(result, got, outputs, b)
                results.append(result)
            encode_result_block(result_block_of(results))  # the poll's one result block
            return len(joins)
        return step

    return {"per_query_per_s": rate(emit(False), seconds, lambda: None),
            "batched_per_s": rate(emit(True), seconds, lambda: None)}
