"""Aggregator CPU per query on the block wire, through the service's own code (no broker):
query block records and signed response block records in (`_on_query`, `_on_responses`),
result block records out (`_emit_ready`), incentive windows fed, as in production.

Step 1 (per-query JoinTable + build_result behind block converters) against the
vectorized join (BlockJoinTable + block_results.settle + to_result_blocks: same records in,
result blocks out, but no copy screening and no incentive window: a lower bound of what
a vectorized aggregator would cost).

5 participants (σ = 0.3, so copies are screened), every one answers every query on time;
a response record covers one micro-batch of `--batch` query rows (at block 1: as many
blocks as spans), or one block (`--per-block`). CPU time (process_time), OMP_NUM_THREADS=1.

    python benchmarks/aggregator/blocks.py [--queries 4096] [--out FILE.json]
    python benchmarks/aggregator/blocks.py --check   # same Results, every strategy?
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
from aiokafka import ConsumerRecord, TopicPartition
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consumers.aggregator import AggregatorService
from fi_stream.block_join import BlockJoinTable
from fi_stream.block_results import settle, to_result_blocks
from fi_stream.block_signing import sign_response_block, verify_response_block
from fi_stream.block_state import exclusion_codes
from fi_stream.logging import configure_logging
from fi_stream.settings import Settings
from fi_stream.signing import public_key_bytes
from fi_stream.validation import screen_rows
from schemas import Participant, Privacy, TaskSpec, WindowRef
from schemas.blocks import (
    ResponseBlock,
    decode_query_block,
    decode_response_block,
    encode_query_block,
    encode_response_block,
    encode_result_block,
    query_block,
)

PIDS = [f"p{i}" for i in range(5)]
C = 10
NOW = 1_700_000_000_000
PRIVACY = Privacy(clip_norm=1.0, noise_multiplier=0.3)
SPEC = TaskSpec(task="digits", input_shape=(64,), input_min=0.0, input_max=1.0,
                num_classes=C)
KEYS = {p: Ed25519PrivateKey.generate() for p in PIDS}

Work: TypeAlias = list[tuple[list[bytes], list[bytes]]]
Record: TypeAlias = ConsumerRecord[bytes, bytes]


def _record(topic: str, offset: int, key: bytes, value: bytes) -> Record:
    record: Record = ConsumerRecord(topic, 0, offset, NOW, 0, key, value, None, len(key),
                                    len(value), [])
    return record


def workload(queries: int, block: int, batch: int, rng: np.random.Generator
             ) -> list[tuple[list[bytes], list[bytes]]]:
    """Per micro-batch: its query block records and each participant's response record."""
    out = []
    for start in range(0, queries, batch):
        blocks = [f"b{b}" for b in range(start // block, (start + batch) // block)]
        q_raw = [encode_query_block(query_block(
            b, "digits", rng.random((block, 64), dtype=np.float32), created_at_ms=NOW,
            deadline_ms=NOW + 60_000)) for b in blocks]
        r_raw = []
        for p in PIDS:
            x = rng.dirichlet(np.ones(C), batch) + rng.normal(0, 0.3, (batch, C))
            rec = ResponseBlock(p, f"{p}-{start}", "digits", "1", PRIVACY, NOW + 1, 0,
                                [(b, block) for b in blocks], x.astype(np.float32),
                                np.zeros(batch, np.uint8))
            r_raw.append(sign_response_block(encode_response_block(rec), KEYS[p]))
        out.append((q_raw, r_raw))
    return out


def service(strategy: str) -> AggregatorService:
    settings = Settings(aggregator={"strategy": strategy})
    s = AggregatorService(settings)
    s._owned.add(0)
    s._tx.positions[TopicPartition(s.topics.queries, 0)] = 0
    for p in PIDS:
        s.registry.participants[p] = Participant(
            participant_id=p, public_key=public_key_bytes(KEYS[p]), tasks=["digits"],
            model_version="1", privacy=PRIVACY, registered_at_ms=0, task_specs=[SPEC])
    return s


async def run_step1(work: list[tuple[list[bytes], list[bytes]]], strategy: str,
                    emitted: list[bytes] | None = None) -> dict[str, float]:
    s = service(strategy)
    q_off = r_off = 0
    ingest = emit = 0.0
    for q_raw, r_raw in work:
        t0 = time.process_time()
        for raw in q_raw:
            s._on_query(_record(s.topics.queries, q_off, b"b", raw), NOW)
            q_off += 1
        for raw in r_raw:
            s._on_responses(_record(s.topics.responses, r_off, b"p", raw), NOW + 2)
            r_off += 1
        t1 = time.process_time()
        await s._emit_ready(NOW + 3)
        t2 = time.process_time()
        ingest, emit = ingest + t1 - t0, emit + t2 - t1
        assert not s.join.open and not s._tx.outbox[0].topic.endswith("dlq")
        if emitted is not None:
            emitted += [o.value for o in s._tx.outbox if o.topic == s.topics.results]
        s._tx.outbox.clear()
    return {"ingest_s": ingest, "emit_s": emit, "total_s": ingest + emit}


def run_vectorized(work: list[tuple[list[bytes], list[bytes]]], strategy: str,
                   emitted: list[bytes] | None = None) -> dict[str, float]:
    t = BlockJoinTable()
    keys = {p: public_key_bytes(KEYS[p]) for p in PIDS}
    expected = frozenset(PIDS)
    window = WindowRef(partition=0, seq=0)
    q_off = r_off = 0
    ingest = emit = 0.0
    for q_raw, r_raw in work:
        t0 = time.process_time()
        for raw in q_raw:
            t.add_block(decode_query_block(raw), 0, q_off, expected, now_ms=NOW)
            q_off += 1
        for raw in r_raw:
            rb = decode_response_block(raw)
            assert verify_response_block(rb, keys[rb.participant_id])
            answered = rb.outputs[rb.status == 0]
            codes = exclusion_codes(list(screen_rows(answered, PRIVACY, C)))
            full = np.zeros(len(rb), np.uint8)
            full[rb.status == 0] = codes
            t.add_response(rb, 0, r_off, NOW + 2, full)
            r_off += 1
        t1 = time.process_time()
        for ready in t.take_settled():
            outcome = settle(ready.block, ready.rows, strategy=strategy)
            for rb_out in to_result_blocks(ready.block, outcome, strategy=strategy,
                                           completed_at_ms=NOW + 3, window=window):
                raw = encode_result_block(rb_out)
                if emitted is not None:
                    emitted.append(raw)
            t.close(ready.block, ready.rows, NOW + 3)
        t2 = time.process_time()
        ingest, emit = ingest + t1 - t0, emit + t2 - t1
        assert not t.open
    return {"ingest_s": ingest, "emit_s": emit, "total_s": ingest + emit}


def check(queries: int) -> None:
    """One pass (no window closes, so no history weights yet) per strategy and block size:
    do the vectorized join's result blocks give the Results step 1 emits?"""
    from fi_stream.strategies import STRATEGIES
    from schemas.blocks import decode_result_block
    from schemas.blocks.convert import results_of

    def read(values: list[bytes]) -> list[Any]:
        return sorted((r.model_copy(update={"window": None}) for v in values
                       for r in results_of(decode_result_block(v))),
                      key=lambda r: r.query_id)

    for block in (1, 256):
        work = workload(queries, block, queries, np.random.default_rng(1))
        for strategy in sorted(STRATEGIES):
            a: list[bytes] = []
            b: list[bytes] = []
            asyncio.run(run_step1(work, strategy, a))
            try:
                run_vectorized(work, strategy, b)
                same = read(a) == read(b)
            except Exception as exc:  # a strategy the block path does not take
                same = f"{type(exc).__name__}: {exc}"[:120]  # type: ignore[assignment]
            print(json.dumps({"block": block, "strategy": strategy, "same": same}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--strategy", default="soft_vote")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    configure_logging("INFO")  # as the service runs: its per-result debug lines are off
    if args.check:
        check(min(args.queries, 256))
        return
    rows: list[dict[str, Any]] = []
    for block, per_block in ((1, True), (1, False), (256, False)):
        batch = block if per_block else args.batch
        work = workload(args.queries, block, batch, np.random.default_rng(0))
        runs: list[tuple[str, Callable[[Work], dict[str, float]]]] = [
            ("step1", lambda w: asyncio.run(run_step1(w, args.strategy))),
            ("vectorized", lambda w: run_vectorized(w, args.strategy))]
        for name, run in runs:
            best: dict[str, float] | None = None
            for _ in range(3):
                got = run(work)
                if best is None or got["total_s"] < best["total_s"]:
                    best = got
            assert best is not None
            row = {"path": name, "block": block, "rows_per_response_record": batch,
                   "strategy": args.strategy, "queries": args.queries,
                   **{k.replace("_s", "_us_per_query"): round(v / args.queries * 1e6, 1)
                      for k, v in best.items()}}
            print(json.dumps(row))
            rows.append(row)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": platform.platform(),
                                        "participants": len(PIDS), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
