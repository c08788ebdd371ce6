"""The engine fed by blocks: screening, answering row for row, signing."""

from __future__ import annotations

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fi_stream.bench_engine_blocks import DIGITS, block_record, measure
from fi_stream.block_signing import verify_response_block
from fi_stream.engine import InferenceEngine, Signer, answer_block, respond_block, screen_block
from fi_stream.models import build
from fi_stream.privacy import Mechanism
from fi_stream.signing import public_key_bytes
from schemas.blocks import decode_query_block, decode_response_block, query_block

TASK = DIGITS.task_spec()


def _block(x: np.ndarray, deadline: np.ndarray | int = 10_000, **kw: object) -> object:
    return query_block("b", "digits", [f"q{i}" for i in range(len(x))], x,
                       created_at_ms=0, deadline_ms=deadline, **kw)  # type: ignore[arg-type]


def test_screen_marks_expired_and_bad_rows() -> None:
    x = np.full((4, 64), 0.5, np.float32)
    x[1, 3] = np.nan
    x[2, 0] = 1.5  # above the task's maximum 1.0
    status = screen_block(_block(x, np.array([10_000, 10_000, 10_000, 5])), TASK, 100)
    assert status.tolist() == [0, 3, 3, 2]


def test_screen_whole_block_declines() -> None:
    x = np.zeros((2, 64), np.float32)
    other = query_block("b", "cifar", ["a", "b"], x, created_at_ms=0, deadline_ms=9)
    assert screen_block(other, TASK, 0).tolist() == [4, 4]
    assert screen_block(_block(np.zeros((2, 8), np.float32)), TASK, 0).tolist() == [3, 3]


def test_uint8_inputs_are_scaled_before_the_range_check() -> None:
    counts = np.full((2, 64), 16, np.uint8)
    counts[1, 0] = 17  # 17/16 > 1.0
    block = _block(counts, input_scale=1 / 16)
    assert screen_block(block, TASK, 0).tolist() == [0, 3]
    assert np.allclose(block.model_inputs()[0], 1.0)  # type: ignore[attr-defined]


def test_answer_and_respond_row_for_row() -> None:
    torch.manual_seed(0)
    engine = InferenceEngine(build(DIGITS), DIGITS, Mechanism(clip_norm=1.0,
                                                             noise_multiplier=0.3),
                             torch.device("cpu"))
    key = Ed25519PrivateKey.generate()
    signer = Signer(participant_id="p1", spec=DIGITS, key=key,
                    privacy=engine.mechanism.to_privacy())
    block = decode_query_block(block_record(5, "|u1", np.random.default_rng(0)))
    status = screen_block(block, TASK, 0)
    status[2] = 1  # the participant's budget: declined before the model runs
    outputs, final = answer_block(engine, block, status)
    assert final.tolist() == [0, 0, 1, 0, 0]
    assert not outputs[2].any() and np.isfinite(outputs).all()
    raw = respond_block(block, outputs, final, signer, partition=3, produced_at_ms=7)
    response = decode_response_block(raw)
    assert verify_response_block(response, public_key_bytes(key))
    assert response.query_ids == block.query_ids and response.query_partition == 3
    np.testing.assert_array_equal(response.outputs, outputs)
    tampered = decode_response_block(raw[:-1] + bytes([raw[-1] ^ 1]))
    assert not verify_response_block(tampered, public_key_bytes(key))


def test_bench_measures_both_sides() -> None:
    row = measure(16, 0.05)
    assert row["raw_items_per_s"] > 0 and row["engine_over_raw"] > 0
