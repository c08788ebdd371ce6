"""Encode + decode cost per query of candidate query-block layouts (issue 13).

    OMP_NUM_THREADS=1 PYTHONPATH=.:/tmp/pa_eval python benchmarks/wire/layouts.py \
        --json benchmarks/wire/layouts.json

Compares, for blocks of N digits queries ([N, 64] as float32, float16 or uint8):
- `json_b64`: the wire before blocks, one JSON Query record per query with a base64
  tensor (schemas.codec.encode; decoded with schemas.codec.decode since the participant's
  JSON fast decoder was retired with the switch: earlier figures used it), float32 only;
- `block`: the chosen frame (schemas.blocks): prefix + orjson header validated by pydantic
  + aligned raw buffers;
- `block_orjson_only`: the same bytes, the header parsed by orjson without validation (the
  price of validation);
- `arrow_ipc`: an Arrow IPC stream of one record batch (ids, times, a FixedSizeList input),
  block fields as schema metadata, decoded to the same Python values (ids as a list).
pyarrow is not a dependency of fi-stream: install it anywhere on PYTHONPATH to include it.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from schemas import Query, Tensor, decode, encode
from schemas.blocks import decode_query_block, encode_query_block, query_block
from schemas.blocks.frame import PREFIX, PREFIX_SIZE, aligned

DTYPES = {"f4": np.float32, "f2": np.float16, "u1": np.uint8}


def _inputs(n: int, dtype: str, rng: np.random.Generator) -> np.ndarray[Any, Any]:
    counts = rng.integers(0, 17, size=(n, 64))
    return counts.astype(np.uint8) if dtype == "u1" else (counts / 16).astype(DTYPES[dtype])


def per_query_us(fn: Callable[[], None], n: int, budget_s: float = 0.4) -> float:
    """Best-of-5 mean microseconds per query of fn (which handles n queries)."""
    fn()
    best = float("inf")
    for _ in range(5):
        loops, began = 0, time.perf_counter()
        while True:
            fn()
            loops += 1
            if time.perf_counter() - began >= budget_s / 5:
                break
        best = min(best, (time.perf_counter() - began) / loops)
    return best / n * 1e6


def json_b64(n: int, x: np.ndarray[Any, Any]) -> tuple[Callable[[], None], int]:
    ids = [f"0190a1b2-c3d4-7e5f-8a9b-{i:012d}" for i in range(n)]

    def run() -> None:
        raws = [encode(Query(query_id=q, task="digits", input=Tensor.from_numpy(row),
                             created_at_ms=1, deadline_ms=2))
                for q, row in zip(ids, x, strict=True)]
        views = [decode(r, Query) for r in raws]
        np.stack([v.input.to_numpy() for v in views])

    raws = [encode(Query(query_id=q, task="digits", input=Tensor.from_numpy(row),
                         created_at_ms=1, deadline_ms=2)) for q, row in zip(ids, x, strict=True)]
    return run, sum(len(r) for r in raws)


def block(n: int, x: np.ndarray[Any, Any], scale: float | None,
          validate: bool) -> tuple[Callable[[], None], int]:
    ids = [f"0190a1b2-c3d4-7e5f-8a9b-{i:012d}" for i in range(n)]
    raw = encode_query_block(query_block("b", "digits", ids, x, created_at_ms=1,
                                         deadline_ms=2, input_scale=scale))

    def run() -> None:
        r = encode_query_block(query_block("b", "digits", ids, x, created_at_ms=1,
                                           deadline_ms=2, input_scale=scale))
        if validate:
            decode_query_block(r).model_inputs()
        else:
            _, _, _, _, length = PREFIX.unpack_from(r)
            h = orjson.loads(r[PREFIX_SIZE:PREFIX_SIZE + length])
            data = aligned(PREFIX_SIZE + length)
            np.frombuffer(r, dtype=h["input"]["dtype"], count=n * 64,
                          offset=data + h["input"]["offset"]).reshape(n, 64).astype(np.float32)
            np.frombuffer(r, dtype="<i8", count=n, offset=data + h["deadline_ms"]["offset"])

    return run, len(raw)


def arrow(n: int, x: np.ndarray[Any, Any]) -> tuple[Callable[[], None], int]:
    import pyarrow as pa  # type: ignore[import-not-found]
    import pyarrow.ipc as ipc  # type: ignore[import-not-found]

    ids = [f"0190a1b2-c3d4-7e5f-8a9b-{i:012d}" for i in range(n)]
    times = np.full(n, 2, dtype=np.int64)
    meta = {b"block_id": b"b", b"task": b"digits", b"client_id": b"anonymous"}

    def enc() -> bytes:
        flat = pa.array(x.reshape(-1))
        batch = pa.record_batch([pa.array(ids), pa.array(times), pa.array(times),
                                 pa.FixedSizeListArray.from_arrays(flat, 64)],
                                names=["query_id", "created_at_ms", "deadline_ms", "input"])
        sink = pa.BufferOutputStream()
        with ipc.new_stream(sink, batch.schema.with_metadata(meta)) as writer:
            writer.write_batch(batch)
        return bytes(sink.getvalue())

    def run() -> None:
        r = enc()
        batch = ipc.open_stream(r).read_next_batch()
        batch.column(0).to_pylist()
        batch.column(2).to_numpy()
        batch.column(3).values.to_numpy().reshape(n, 64).astype(np.float32)

    return run, len(enc())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    try:
        import pyarrow  # type: ignore[import-not-found]  # noqa: F401
        has_arrow = True
    except ImportError:
        has_arrow = False
    for n in (1, 256, 1024):
        for dtype in ("f4", "f2", "u1"):
            x = _inputs(n, dtype, rng)
            scale = 1 / 16 if dtype == "u1" else None
            cases = {"block": block(n, x, scale, True),
                     "block_orjson_only": block(n, x, scale, False)}
            if dtype == "f4":
                cases["json_b64"] = json_b64(n, x)
            if has_arrow:
                cases["arrow_ipc"] = arrow(n, x)
            for layout, (fn, size) in cases.items():
                rows.append({"n": n, "dtype": dtype, "layout": layout,
                             "us_per_query": round(per_query_us(fn, n), 3),
                             "bytes_per_query": round(size / n, 1)})
                print(rows[-1], flush=True)
    doc = {"benchmark": "wire-layouts", "machine": {"platform": platform.platform(),
                                                    "python": platform.python_version()},
           "note": "encode + decode to (ids, times, float32 [N, 64]), per query", "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
