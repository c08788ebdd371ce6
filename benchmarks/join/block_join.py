"""Join + results cost per query: today's JoinTable path against the block join, same run.

5 participants, all expected, each answers every query of a block on time (one response
block, or for today one ResponseBatch of the same N queries: today's best case), soft vote.

Today: add_query × N, add_batch × 5, take_settled, soft_vote_in_batches, build_result × N,
close × N. Blocks: add_block, add_response × 5, take_settled, block_results.settle, close.
Decoding is not counted (benchmarks/wire measures it), nor emitting.

    python benchmarks/join/block_join.py [--out benchmarks/join/block-join.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from fi_stream.block_join import BlockJoinTable
from fi_stream.block_results import settle
from fi_stream.join import JoinTable
from fi_stream.results import build_result, soft_vote_in_batches
from schemas import Privacy, Query, ResponseBatch, Tensor, WindowRef
from schemas.blocks import ResponseBlock, query_block

PIDS = [f"p{i}" for i in range(5)]
C = 10
WINDOW = WindowRef(partition=0, seq=0)
PRIVACY = Privacy(clip_norm=1, noise_multiplier=0.1)


def workload(n: int, blocks: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    out = []
    for b in range(blocks):
        ids = [f"b{b}-q{i}" for i in range(n)]
        block = query_block(f"b{b}", "digits", ids, np.zeros((n, 64), np.float32),
                            created_at_ms=0, deadline_ms=10_000)
        queries = [Query(query_id=q, task="digits",
                         input=Tensor.from_numpy(np.zeros(64, np.float32)),
                         created_at_ms=0, deadline_ms=10_000) for q in ids]
        outs = {p: rng.normal(0.1, 0.1, (n, C)).astype(np.float32) for p in PIDS}
        responses = [ResponseBlock(p, f"{p}-{b}", "digits", "1", PRIVACY, 5, 0, f"b{b}", ids,
                                   outs[p], np.zeros(n, np.uint8)) for p in PIDS]
        batches = [ResponseBatch(participant_id=p, batch_id=f"{p}-{b}", task="digits",
                                 model_version="1", privacy=PRIVACY, produced_at_ms=5,
                                 query_partition=0, answered=ids,
                                 outputs=Tensor.from_numpy(outs[p])) for p in PIDS]
        out.append({"block": block, "queries": queries, "responses": responses,
                    "batches": batches})
    return out


def run_today(work: list[dict[str, Any]]) -> int:
    t = JoinTable()
    expected = frozenset(PIDS)
    offset = emitted = 0
    for w in work:
        for q in w["queries"]:
            offset += 1
            t.add_query(q, 0, offset, expected)
        for batch in w["batches"]:
            offset += 1
            t.add_batch(batch, 0, offset, 1)
        settled = t.take_settled()
        batched = soft_vote_in_batches(settled)
        for oq in settled:
            build_result(oq, strategy="soft_vote", completed_at_ms=2, window=WINDOW,
                         batched=batched.get(oq.query.query_id))
            t.close(oq, 2)
            emitted += 1
    return emitted


def run_blocks(work: list[dict[str, Any]]) -> int:
    t = BlockJoinTable()
    expected = frozenset(PIDS)
    offset = emitted = 0
    for w in work:
        offset += 1
        t.add_block(w["block"], 0, offset, expected)
        for resp in w["responses"]:
            offset += 1
            t.add_response(resp, 0, offset, 1)
        for ready in t.take_settled():
            outcome = settle(ready.block, ready.rows, strategy="soft_vote")
            t.close(ready.block, ready.rows, 2)
            emitted += len(outcome.rows)
    return emitted


def best_us_per_query(fn: Any, work: list[dict[str, Any]], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        count = fn(work)
        best = min(best, (time.perf_counter() - start) / count)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/join/block-join.json")
    parser.add_argument("--queries", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for n in (1, 256, 1024):
        queries = args.queries if n > 1 else args.queries // 4
        work = workload(n, max(1, queries // n))
        today = best_us_per_query(run_today, work, args.repeats)
        blocks = best_us_per_query(run_blocks, work, args.repeats)
        rows.append({"n": n, "participants": len(PIDS), "classes": C,
                     "queries": len(work) * n, "today_us_per_query": round(today, 3),
                     "blocks_us_per_query": round(blocks, 3),
                     "speedup": round(today / blocks, 1),
                     "blocks_queries_per_s_one_core": round(1e6 / blocks)})
        print(rows[-1], flush=True)
    Path(args.out).write_text(json.dumps({
        "what": "join + results per query, 5 participants, soft vote, best of "
                f"{args.repeats}; today's JoinTable+build_result vs BlockJoinTable+settle",
        "command": "python benchmarks/join/block_join.py",
        "python": platform.python_version(), "numpy": np.__version__,
        "machine": platform.machine(), "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
