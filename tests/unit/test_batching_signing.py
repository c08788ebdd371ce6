"""Micro-batching by size and wait; Ed25519 batch signatures."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from fi_stream.batching import MicroBatcher
from fi_stream.errors import SignatureError
from fi_stream.signing import (
    generate_key,
    load_private_key,
    public_key_bytes,
    sign_batch,
    verify_batch,
)
from schemas import Privacy, ResponseBatch, Tensor


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


async def test_batch_fills_up_to_max_batch() -> None:
    chunks = [[1, 2], [3, 4, 5], [6]]

    async def fetch(timeout_ms: int, max_records: int) -> Sequence[int]:
        return chunks.pop(0)[:max_records] if chunks else []

    b = MicroBatcher(fetch=fetch, max_batch=4, max_wait_ms=1000)
    assert await b.next_batch() == [1, 2, 3, 4]


async def test_batch_closes_after_max_wait() -> None:
    clock = FakeClock()
    arrivals = [[7]]

    async def fetch(timeout_ms: int, max_records: int) -> Sequence[int]:
        clock.t += timeout_ms / 1000  # nothing more arrives: the whole timeout passes
        return arrivals.pop() if arrivals else []

    b = MicroBatcher(fetch=fetch, max_batch=100, max_wait_ms=5, idle_poll_ms=0, clock=clock)
    assert await b.next_batch() == [7]
    assert clock.t == pytest.approx(0.005)


def _batch() -> ResponseBatch:
    return ResponseBatch(
        participant_id="p1", batch_id="b", task="digits", model_version="1",
        privacy=Privacy(clip_norm=1, noise_multiplier=1), produced_at_ms=1, query_partition=0,
        answered=["q"], outputs=Tensor.from_numpy(np.ones((1, 10), np.float32)))


def test_signature_verifies_and_detects_tampering(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "k.pem")
    signed = sign_batch(_batch(), key)
    pub = public_key_bytes(load_private_key(tmp_path / "k.pem"))
    assert verify_batch(signed, pub)
    forged = signed.model_copy(update={"answered": ["other"]})
    assert not verify_batch(forged, pub)
    other = public_key_bytes(generate_key(tmp_path / "other.pem"))
    assert not verify_batch(signed, other)


def test_keys_are_never_overwritten_and_missing_keys_say_what_to_do(tmp_path: Path) -> None:
    generate_key(tmp_path / "k.pem")
    with pytest.raises(FileExistsError):
        generate_key(tmp_path / "k.pem")
    with pytest.raises(SignatureError, match="fi-stream keys generate"):
        load_private_key(tmp_path / "missing.pem")
