"""Ed25519 over a response block's bytes vs. over their SHA-256 / BLAKE2b digest (issue 13).

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/wire/signing.py \
        --json benchmarks/wire/signing.json

Ed25519 hashes its message with SHA-512 twice to sign (nonce, then challenge) and once to
verify; a 32-byte digest taken once (SHA-256 runs on the CPU's SHA extensions where there
are some) replaces those passes over a 70 KB record. Records are real response blocks of
N digits answers (10 classes). Signing is `cryptography` (as fi_stream.engine signs),
verifying is PyNaCl (as fi_stream.block_signing verifies). Best of 7 rounds, µs per call.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.signing import VerifyKey

from fi_stream.signing import public_key_bytes
from schemas import Privacy
from schemas.blocks import ResponseBlock, encode_response_block


def best_us(fn: Callable[[], object], budget_s: float = 0.35) -> float:
    fn()
    best = float("inf")
    for _ in range(7):
        loops, began = 0, time.perf_counter()
        while True:
            fn()
            loops += 1
            if time.perf_counter() - began >= budget_s / 7:
                break
        best = min(best, (time.perf_counter() - began) / loops)
    return best * 1e6


def record(n: int) -> bytes:
    rng = np.random.default_rng(0)
    return encode_response_block(ResponseBlock(
        "p1", "b" * 32, "digits", "v1", Privacy(clip_norm=1.0, noise_multiplier=0.3),
        1_700_000_000_000, 0, "blk", [f"0190a1b2-c3d4-7e5f-8a9b-{i:012d}" for i in range(n)],
        rng.random((n, 10), dtype=np.float32), np.zeros(n, dtype=np.uint8)))[:-64]


def row(n: int) -> dict[str, Any]:
    key = Ed25519PrivateKey.generate()
    verify_key = VerifyKey(public_key_bytes(key))
    data = record(n)
    sha, b2 = hashlib.sha256(data).digest(), hashlib.blake2b(data, digest_size=32).digest()
    sig, sig_sha, sig_b2 = key.sign(data), key.sign(sha), key.sign(b2)
    out: dict[str, Any] = {"n": n, "bytes": len(data)}
    out["sign_record_us"] = best_us(lambda: key.sign(data))
    out["sign_sha256_us"] = best_us(lambda: key.sign(hashlib.sha256(data).digest()))
    out["sign_blake2b_us"] = best_us(
        lambda: key.sign(hashlib.blake2b(data, digest_size=32).digest()))
    out["verify_record_us"] = best_us(lambda: verify_key.verify(data, sig))
    out["verify_sha256_us"] = best_us(
        lambda: verify_key.verify(hashlib.sha256(data).digest(), sig_sha))
    out["verify_blake2b_us"] = best_us(
        lambda: verify_key.verify(hashlib.blake2b(data, digest_size=32).digest(), sig_b2))
    out["sha256_us"] = best_us(lambda: hashlib.sha256(data).digest())
    out["sha512_us"] = best_us(lambda: hashlib.sha512(data).digest())
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", type=Path)
    parser.add_argument("--sizes", default="1,256,1024,4096")
    args = parser.parse_args()
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        rows.append(row(n))
        print(rows[-1], flush=True)
    doc = {"benchmark": "block-signing", "machine": {"platform": platform.platform(),
                                                     "python": platform.python_version()},
           "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
