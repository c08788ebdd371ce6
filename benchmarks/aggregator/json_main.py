"""Main's JSON aggregator, per query, on the workload of `blocks.py` (the comparison for
issue 13): run with PYTHONPATH=/work/main (the per-query wire), not this tree.

Same service methods as production (`_on_query`, `_on_responses`, `_emit_ready`: decode,
verify, JoinTable, build_result, encode(Result), incentive window), no broker: 5
participants (σ = 0.3), every one answers every query on time; a response batch covers
`--batch` queries (1 or 256). CPU time (process_time), OMP_NUM_THREADS=1.

    PYTHONPATH=/work/main python benchmarks/aggregator/json_main.py [--queries 2048]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import numpy as np
from aiokafka import ConsumerRecord, TopicPartition
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consumers.aggregator import AggregatorService
from fi_stream.logging import configure_logging
from fi_stream.settings import Settings
from fi_stream.signing import public_key_bytes, sign_batch
from schemas import Participant, Privacy, Query, ResponseBatch, TaskSpec, Tensor, encode

PIDS = [f"p{i}" for i in range(5)]
C = 10
NOW = 1_700_000_000_000
PRIVACY = Privacy(clip_norm=1.0, noise_multiplier=0.3)
SPEC = TaskSpec(task="digits", input_shape=(64,), input_min=0.0, input_max=1.0,
                num_classes=C)
KEYS = {p: Ed25519PrivateKey.generate() for p in PIDS}


def _record(topic: str, offset: int, value: bytes) -> Any:
    return ConsumerRecord(topic, 0, offset, NOW, 0, b"k", value, None, 1, len(value), [])


def workload(queries: int, batch: int, rng: np.random.Generator
             ) -> list[tuple[list[bytes], list[bytes]]]:
    out = []
    for start in range(0, queries, batch):
        ids = [f"q{n}" for n in range(start, start + batch)]
        q_raw = [encode(Query(query_id=q, task="digits",
                              input=Tensor.from_numpy(rng.random(64, dtype=np.float32)),
                              created_at_ms=NOW, deadline_ms=NOW + 60_000)) for q in ids]
        r_raw = []
        for p in PIDS:
            x = rng.dirichlet(np.ones(C), batch) + rng.normal(0, 0.3, (batch, C))
            rb = ResponseBatch(participant_id=p, batch_id=f"{p}-{start}", task="digits",
                               model_version="1", privacy=PRIVACY, produced_at_ms=NOW + 1,
                               query_partition=0, answered=ids,
                               outputs=Tensor.from_numpy(x.astype(np.float32)))
            r_raw.append(encode(sign_batch(rb, KEYS[p])))
        out.append((q_raw, r_raw))
    return out


def service(strategy: str) -> AggregatorService:
    s = AggregatorService(Settings(aggregator={"strategy": strategy}))
    s._owned.add(0)
    s._tx.positions[TopicPartition(s.topics.queries, 0)] = 0
    for p in PIDS:
        s.registry.participants[p] = Participant(
            participant_id=p, public_key=public_key_bytes(KEYS[p]), tasks=["digits"],
            model_version="1", privacy=PRIVACY, registered_at_ms=0, task_specs=[SPEC])
    return s


async def run(work: list[tuple[list[bytes], list[bytes]]], strategy: str) -> dict[str, float]:
    s = service(strategy)
    q_off = r_off = 0
    ingest = emit = 0.0
    for q_raw, r_raw in work:
        t0 = time.process_time()
        for raw in q_raw:
            s._on_query(_record(s.topics.queries, q_off, raw), NOW)
            q_off += 1
        for raw in r_raw:
            s._on_responses(_record(s.topics.responses, r_off, raw), NOW + 2)
            r_off += 1
        t1 = time.process_time()
        await s._emit_ready(NOW + 3)
        t2 = time.process_time()
        ingest, emit = ingest + t1 - t0, emit + t2 - t1
        assert not s.join.open
        s._tx.outbox.clear()
    return {"ingest_s": ingest, "emit_s": emit, "total_s": ingest + emit}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=2048)
    ap.add_argument("--strategy", default="soft_vote")
    args = ap.parse_args()
    configure_logging("INFO")
    for batch in (1, 256):
        work = workload(args.queries, batch, np.random.default_rng(0))
        best = min((asyncio.run(run(work, args.strategy)) for _ in range(3)),
                   key=lambda r: r["total_s"])
        print(json.dumps({"path": "main-json", "block": 1, "rows_per_response_record": batch,
                          "strategy": args.strategy, "queries": args.queries,
                          **{k.replace("_s", "_us_per_query"):
                             round(v / args.queries * 1e6, 1) for k, v in best.items()}}))


if __name__ == "__main__":
    main()
