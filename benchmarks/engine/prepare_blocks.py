"""The participant's `fi_stream.engine.prepare` per query on query blocks: one micro-batch of
`--records` records (256), each a block of `--rows` rows (1: single queries), digits
inputs, decoded and screened as the participant service does (deadline cap 300 s, no
quota). Wall time per query, best of `--repeats` runs of `--loops` calls, OMP_NUM_THREADS=1.
Main's JSON path (one Query per record) measured the same way was 9.9-11.7 µs/query.

    python benchmarks/engine/prepare_blocks.py [--rows 1] [--records 256] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from fi_stream.clock import now_ms
from fi_stream.engine import prepare
from fi_stream.models import ModelSpec, load_digits_split
from schemas.blocks import encode_query_block, query_block

SPEC = ModelSpec(architecture="digits-mlp", task="digits", version="1", input_shape=(64,),
                 num_classes=10, input_range=(0.0, 1.0))


def measure(rows: int, records: int, loops: int, repeats: int) -> dict[str, float | int]:
    x = load_digits_split().x_test
    now = now_ms()
    items = [(0, encode_query_block(query_block(
        f"b{i}", "digits", x[np.arange(i * rows, (i + 1) * rows) % len(x)],
        created_at_ms=now, deadline_ms=now + 60_000))) for i in range(records)]
    prepared = prepare(items, SPEC, now, 300_000)
    assert len(prepared.answerable) == rows * records, prepared.declined()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(loops):
            prepare(items, SPEC, now, 300_000)
        best = min(best, time.perf_counter() - started)
    return {"rows_per_block": rows, "records": records, "loops": loops, "repeats": repeats,
            "us_per_query": best / loops / (rows * records) * 1e6,
            "us_per_record": best / loops / records * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--records", type=int, default=256)
    parser.add_argument("--loops", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = {"benchmark": "engine.prepare on query blocks", "python": platform.python_version(),
              **measure(args.rows, args.records, args.loops, args.repeats)}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
