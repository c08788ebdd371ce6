"""Broker-side micro-batching settings; Ed25519 batch signatures."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from fi_stream.batching import (
    IDLE_FETCH_WAIT_MS,
    QUERY_OVERHEAD_BYTES,
    fetch_batching,
    query_record_bytes,
)
from fi_stream.errors import SignatureError
from fi_stream.signing import (
    generate_key,
    load_private_key,
    public_key_bytes,
    sign_batch,
    verify_batch,
)
from schemas import Privacy, Query, ResponseBatch, Tensor, encode


def test_the_broker_holds_a_fetch_for_a_full_batch_or_the_wait() -> None:
    kwargs = fetch_batching(max_batch=256, max_wait_ms=20, record_bytes=600)
    assert kwargs == {"fetch_min_bytes": 256 * 600, "fetch_max_wait_ms": 20}


def test_no_wait_answers_at_once_but_long_polls_when_idle() -> None:
    kwargs = fetch_batching(max_batch=1, max_wait_ms=0, record_bytes=600)
    assert kwargs == {"fetch_min_bytes": 1, "fetch_max_wait_ms": IDLE_FETCH_WAIT_MS}


def test_record_size_estimate_covers_a_real_query() -> None:
    for shape in [(64,), (3, 32, 32)]:
        x = np.zeros(shape, np.float32)
        query = Query(query_id=str(uuid.uuid4()), task="t", created_at_ms=1, deadline_ms=2,
                      input=Tensor.from_numpy(x), client_id="client")
        actual = len(encode(query))
        assert actual <= query_record_bytes(shape) <= actual + QUERY_OVERHEAD_BYTES


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
    # Malformed keys and signatures are a failed check, not a crash of the aggregator.
    assert not verify_batch(signed, pub[:31])
    assert not verify_batch(signed.model_copy(update={"signature": signed.signature[:63]}), pub)
    assert not verify_batch(signed.model_copy(update={"signature": b""}), pub)


def test_keys_are_never_overwritten_and_missing_keys_say_what_to_do(tmp_path: Path) -> None:
    generate_key(tmp_path / "k.pem")
    with pytest.raises(FileExistsError):
        generate_key(tmp_path / "k.pem")
    with pytest.raises(SignatureError, match="fi-stream keys generate"):
        load_private_key(tmp_path / "missing.pem")
