"""Raw forward vs. the participant engine fed by blocks (issue 13), for `fi-stream bench
engine`: the engine decodes an encoded query block, screens it, runs the model on its
[N, …] tensor as one array, releases (softmax, clip, noise) and returns an encoded, signed
response block. Run it as

    python -m fi_stream.bench_engine_blocks --threads 1,2 --json benchmarks/engine/blocks.json

`threads`: torch's intra-op threads (the OMP_NUM_THREADS the process would be given).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fi_stream.engine import InferenceEngine, Signer, answer_block, respond_block, screen_block
from fi_stream.models import ModelSpec, build
from fi_stream.privacy import Mechanism
from schemas.blocks import decode_query_block, encode_query_block, query_block

DIGITS = ModelSpec(architecture="digits-mlp", task="digits", version="bench",
                   input_shape=(64,), num_classes=10, input_range=(0.0, 1.0))


def rate(step: Callable[[], int], seconds: float) -> float:
    """Items per second of `step` (which returns the items it did), after a warm-up."""
    step()
    step()
    items, started = 0, time.perf_counter()
    while True:
        items += step()
        if time.perf_counter() - started >= seconds:
            break
    return items / (time.perf_counter() - started)


def block_record(n: int, dtype: str, rng: np.random.Generator) -> bytes:
    """An encoded query block of n digits-like queries (|u1 counts with scale 1/16, or
    those values as <f2 / <f4)."""
    counts = rng.integers(0, 17, size=(n, 64))
    x = counts.astype(np.uint8) if dtype == "|u1" else (counts / 16).astype(dtype)
    now = int(time.time() * 1000)
    return encode_query_block(query_block(
        f"bench-{n}", DIGITS.task, x, created_at_ms=now,
        deadline_ms=now + 3_600_000, input_scale=1 / 16 if dtype == "|u1" else None))


def measure(n: int, seconds: float, dtype: str = "<f4") -> dict[str, float]:
    """Raw forward and block-fed engine items/s at block size n, side by side."""
    torch.manual_seed(0)
    engine = InferenceEngine(build(DIGITS), DIGITS, Mechanism(clip_norm=1.0,
                                                             noise_multiplier=0.3),
                             torch.device("cpu"))
    signer = Signer(participant_id="bench", spec=DIGITS, key=Ed25519PrivateKey.generate(),
                    privacy=engine.mechanism.to_privacy())
    task = DIGITS.task_spec()
    record = block_record(n, dtype, np.random.default_rng(0))
    x = torch.rand(n, 64)

    def raw() -> int:
        with torch.inference_mode():
            engine.module(x)
        return n

    def fed() -> int:
        block = decode_query_block(record)
        now = int(time.time() * 1000)
        outputs, status = answer_block(engine, block, screen_block(block, task, now))
        respond_block(block, outputs, status, signer, partition=0, produced_at_ms=now)
        return n

    raw_rate, engine_rate = rate(raw, seconds), rate(fed, seconds)
    return {"raw_items_per_s": raw_rate, "engine_items_per_s": engine_rate,
            "engine_over_raw": engine_rate / raw_rate}


def run(sizes: Sequence[int], threads: Sequence[int], seconds: float,
        dtypes: Sequence[str] = ("<f4",)) -> dict[str, Any]:
    """Every (threads, dtype, block size) measurement, as one JSON document."""
    rows = []
    before = torch.get_num_threads()
    try:
        for t in threads:
            torch.set_num_threads(t)
            for dtype in dtypes:
                for n in sizes:
                    rows.append({"threads": t, "dtype": dtype, "block": n,
                                 **measure(n, seconds, dtype)})
    finally:
        torch.set_num_threads(before)
    return {"benchmark": "engine-blocks", "model": "digits-mlp", "device": "cpu",
            "seconds": seconds, "torch": torch.__version__, "rows": rows}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,256,1024")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--dtypes", default="<f4,|u1")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    doc = run([int(s) for s in args.sizes.split(",")],
              [int(t) for t in args.threads.split(",")], args.seconds,
              args.dtypes.split(","))
    text = json.dumps(doc, indent=2)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
