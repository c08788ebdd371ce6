"""Broker-side micro-batching settings (sized by query block records); Ed25519 signatures
of response block records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fi_stream.batching import (
    IDLE_FETCH_WAIT_MS,
    QUERY_OVERHEAD_BYTES,
    fetch_batching,
    query_record_bytes,
)
from fi_stream.block_signing import sign_response_block, verify_response_block
from fi_stream.errors import SignatureError
from fi_stream.signing import generate_key, load_private_key, public_key_bytes
from schemas import Privacy
from schemas.blocks import (
    SIGNATURE_SIZE,
    ResponseBlock,
    decode_response_block,
    encode_query_block,
    encode_response_block,
    query_block,
)


def test_the_broker_holds_a_fetch_for_a_full_batch_or_the_wait() -> None:
    kwargs = fetch_batching(max_batch=256, max_wait_ms=20, record_bytes=600)
    assert kwargs == {"fetch_min_bytes": 256 * 600, "fetch_max_wait_ms": 20}


def test_no_wait_answers_at_once_but_long_polls_when_idle() -> None:
    kwargs = fetch_batching(max_batch=1, max_wait_ms=0, record_bytes=600)
    assert kwargs == {"fetch_min_bytes": 1, "fetch_max_wait_ms": IDLE_FETCH_WAIT_MS}


@pytest.mark.parametrize("rows", [1, 7, 256])
@pytest.mark.parametrize("shape", [(64,), (3, 32, 32)])
@pytest.mark.parametrize("dtype", ["<f4", "|u1"])
def test_record_size_estimate_covers_a_real_query_block(rows: int, shape: tuple[int, ...],
                                                        dtype: str) -> None:
    x = np.zeros((rows, *shape), dtype)
    block = query_block("0f8fad5b-d9cb-469f-a165-70867728950e", "cifar10", x,
                        created_at_ms=1, deadline_ms=2, client_id="client-0001",
                        strategy="soft_vote", input_scale=1 / 16 if dtype == "|u1" else None)
    actual = len(encode_query_block(block))
    estimate = query_record_bytes(shape, rows, np.dtype(dtype).itemsize)
    assert actual <= estimate <= actual + QUERY_OVERHEAD_BYTES


def _record(**kw: object) -> bytes:
    fields: dict[str, object] = dict(
        participant_id="p1", batch_id="b", task="digits", model_version="1",
        privacy=Privacy(clip_norm=1, noise_multiplier=1), produced_at_ms=1, query_partition=0,
        spans=[("q", 2)], outputs=np.array([np.ones(10), np.zeros(10)], np.float32),
        status=np.array([0, 1], np.uint8))
    return encode_response_block(ResponseBlock(**{**fields, **kw}))  # type: ignore[arg-type]


def test_signature_verifies_and_detects_tampering(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "k.pem")
    raw = sign_response_block(_record(), key)
    pub = public_key_bytes(load_private_key(tmp_path / "k.pem"))
    assert verify_response_block(decode_response_block(raw), pub)
    one = np.float32(1).tobytes()
    at = raw.index(one)  # the first answered output
    forged = raw[:at] + np.float32(2).tobytes() + raw[at + 4:]
    assert not verify_response_block(decode_response_block(forged), pub)
    other_spans = _record(spans=[("other", 2)])[:-SIGNATURE_SIZE] + raw[-SIGNATURE_SIZE:]
    assert not verify_response_block(decode_response_block(other_spans), pub)
    other = public_key_bytes(generate_key(tmp_path / "other.pem"))
    assert not verify_response_block(decode_response_block(raw), other)
    # Malformed keys and signatures are a failed check, not a crash of the aggregator.
    block = decode_response_block(raw)
    assert not verify_response_block(block, pub[:31])
    zero = decode_response_block(raw[:-SIGNATURE_SIZE] + bytes(SIGNATURE_SIZE))
    assert not verify_response_block(zero, pub)


def test_keys_are_never_overwritten_and_missing_keys_say_what_to_do(tmp_path: Path) -> None:
    generate_key(tmp_path / "k.pem")
    with pytest.raises(FileExistsError):
        generate_key(tmp_path / "k.pem")
    with pytest.raises(SignatureError, match="fi-stream keys generate"):
        load_private_key(tmp_path / "missing.pem")
