"""The engine fed by blocks: screening row for row (the same checks and order as the
per-query path), answering, one signed response block per partition — and, property-tested,
that any bytes are safe to hand to `prepare` and every row of every block is answered or
declined exactly once, in record order."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fi_stream.block_signing import verify_response_block
from fi_stream.engine import (
    InferenceEngine,
    Signer,
    answer_block,
    assemble,
    prepare,
    respond_block,
    screen_block,
)
from fi_stream.models import ModelSpec, build
from fi_stream.privacy import Mechanism
from fi_stream.signing import public_key_bytes
from schemas import Privacy
from schemas.blocks import (
    DECLINE_CODES,
    QueryBlock,
    decode_query_block,
    decode_response_block,
    encode_query_block,
    query_block,
)

DIGITS = ModelSpec(architecture="digits-mlp", task="digits", version="1", input_shape=(64,),
                   num_classes=10, input_range=(0.0, 1.0))
TASK = DIGITS.task_spec()
SIGNER = Signer(participant_id="p1", spec=DIGITS, key=Ed25519PrivateKey.generate(),
                privacy=Privacy(clip_norm=1.0, noise_multiplier=0.3))
NOW = 1_000_000


def _block(x: np.ndarray[Any, Any], deadline: np.ndarray[Any, Any] | int = NOW + 10_000,
           **kw: Any) -> QueryBlock:
    return query_block("b", "digits", x, created_at_ms=NOW, deadline_ms=deadline, **kw)


def test_screen_marks_expired_and_bad_rows() -> None:
    x = np.full((4, 64), 0.5, np.float32)
    x[1, 3] = np.nan
    x[2, 0] = 1.5  # above the task's maximum 1.0
    status = screen_block(_block(x, np.array([NOW + 9, NOW + 9, NOW + 9, 5])), TASK, NOW)
    assert status.tolist() == [0, 3, 3, 2]


def test_screen_whole_block_declines() -> None:
    x = np.zeros((2, 64), np.float32)
    other = query_block("b", "cifar", x, created_at_ms=0, deadline_ms=NOW + 9)
    assert screen_block(other, TASK, NOW).tolist() == [4, 4]
    assert screen_block(_block(np.zeros((2, 8), np.float32)), TASK, NOW).tolist() == [3, 3]
    unknown = _block(x, strategy="best_vote")
    assert screen_block(unknown, TASK, NOW).tolist() == [3, 3]


def test_the_deadline_cap_is_exact_on_any_int64_times() -> None:
    """deadline − created > cap, also where int64 subtraction would wrap."""
    big, cap = 2**63 - 1, 60_000
    created = np.array([NOW, NOW, -big, 0, -5], dtype=np.int64)
    deadline = np.array([NOW + cap, NOW + cap + 1, big, big, big], dtype=np.int64)
    block = QueryBlock("b", "digits", created, deadline, np.full((5, 64), 0.5, np.float32))
    assert screen_block(block, TASK, NOW, cap).tolist() == [0, 3, 3, 3, 3]
    prepared = prepare([(0, encode_query_block(block))], DIGITS, NOW, cap)
    assert all(prepared.details[r].startswith("deadline_too_far") for r in (1, 2, 3, 4))


def test_rows_are_checked_in_the_per_query_order() -> None:
    """task, then expiry, then the deadline cap, then strategy and shape, then values."""
    x = np.zeros((3, 8), np.float32)
    deadline = np.array([NOW - 1, NOW + 90_000, NOW + 10])
    block = _block(x, deadline, strategy="best_vote")
    assert screen_block(block, TASK, NOW, 60_000).tolist() == [2, 3, 3]
    p = prepare([(0, encode_query_block(block))], DIGITS, NOW, 60_000)
    assert p.details[1].startswith("deadline_too_far")
    assert p.details[2].startswith("unknown_strategy")


def test_uint8_inputs_are_scaled_before_the_range_check() -> None:
    counts = np.full((2, 64), 16, np.uint8)
    counts[1, 0] = 17  # 17/16 > 1.0
    block = _block(counts, input_scale=1 / 16)
    assert screen_block(block, TASK, NOW).tolist() == [0, 3]
    assert np.allclose(block.model_inputs()[0], 1.0)


def test_answer_and_respond_row_for_row() -> None:
    torch.manual_seed(0)
    engine = InferenceEngine(build(DIGITS), DIGITS, Mechanism(clip_norm=1.0,
                                                             noise_multiplier=0.3),
                             torch.device("cpu"))
    counts = np.random.default_rng(0).integers(0, 17, size=(5, 64)).astype(np.uint8)
    block = decode_query_block(encode_query_block(_block(counts, input_scale=1 / 16)))
    status = screen_block(block, TASK, NOW)
    status[2] = 1  # the participant's budget: declined before the model runs
    outputs, final = answer_block(engine, block, status)
    assert final.tolist() == [0, 0, 1, 0, 0]
    assert not outputs[2].any() and np.isfinite(outputs).all()
    raw = respond_block(block, outputs, final, SIGNER, partition=3, produced_at_ms=7)
    response = decode_response_block(raw)
    key = public_key_bytes(SIGNER.key)
    assert verify_response_block(response, key)
    assert response.query_ids == block.query_ids and response.query_partition == 3
    assert response.spans == [("b", 5)]
    np.testing.assert_array_equal(response.outputs, outputs)
    tampered = decode_response_block(raw[:-1] + bytes([raw[-1] ^ 1]))
    assert not verify_response_block(tampered, key)


def test_non_finite_outputs_are_declined_never_signed() -> None:
    p = prepare([(0, encode_query_block(_block(np.full((2, 64), 0.5, np.float32))))],
                DIGITS, NOW)
    outputs = np.full((2, 10), 0.1, np.float32)
    outputs[1, 4] = np.nan
    [(_, raw)] = assemble(p, [0, 1], outputs, SIGNER, NOW + 1)
    block = decode_response_block(raw)
    assert block.status.tolist() == [0, 3] and np.isfinite(block.outputs).all()
    assert "not finite" in block.details[1]


# -- properties --------------------------------------------------------------------------------

@st.composite
def _records(draw: st.DrawFn) -> tuple[int, bytes | None]:
    """A partition and a record: a valid block (any mix of rows), a damaged one, or bytes."""
    partition = draw(st.integers(0, 2))
    kind = draw(st.sampled_from(["block", "block", "block", "cut", "flip", "bytes", "none"]))
    if kind == "bytes":
        return partition, draw(st.binary(max_size=200))
    if kind == "none":
        return partition, None
    n = draw(st.integers(1, 6))
    x = draw(st.sampled_from([0.5, 2.0, np.nan])) * np.ones((n, 64), np.float32)
    x[0, 0] = draw(st.sampled_from([0.1, 1.5, -np.inf]))
    deadline = np.array(draw(st.lists(st.sampled_from([NOW - 1, NOW + 5, NOW + 10**6]),
                                      min_size=n, max_size=n)))
    raw = encode_query_block(query_block(
        draw(st.sampled_from(["a", "b", "c"])), draw(st.sampled_from(["digits", "cifar"])),
        x, created_at_ms=NOW, deadline_ms=deadline,
        strategy=draw(st.sampled_from([None, "median", "nope"]))))
    if kind == "cut":
        raw = raw[:draw(st.integers(0, len(raw) - 1))]
    elif kind == "flip":
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([raw[at] ^ draw(st.integers(1, 255))]) + raw[at + 1:]
    return partition, raw


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(_records(), max_size=8), budget=st.integers(0, 10),
       quota=st.integers(0, 10))
def test_any_records_are_answered_or_declined_exactly_once(
        items: list[tuple[int, bytes | None]], budget: int, quota: int) -> None:
    p = prepare(items, DIGITS, NOW, 60_000, quota=lambda _i, _b, rows: min(rows, quota))
    assert len(p.broken) + len(p.repeats) + len(p.spans) == len(items)
    assert len(p) == sum(n for _, _, n in p.spans) == len(p.status)
    assert p.status[p.answerable].tolist() == [0] * len(p.answerable)
    assert int((p.status == 0).sum()) == len(p.answerable)
    assert (len(p.answerable) == 0) == (p.inputs is None)
    assert p.inputs is None or len(p.inputs) == len(p.answerable)
    answered = list(range(min(budget, len(p.answerable))))
    outputs = np.full((len(answered), 10), 0.1, np.float32)
    records = assemble(p, answered, outputs, SIGNER, NOW)
    by_partition: dict[int, list[tuple[str, int]]] = {}
    rows = 0
    for partition, raw in records:
        block = decode_response_block(raw)
        assert verify_response_block(block, public_key_bytes(SIGNER.key))
        assert block.query_partition == partition
        by_partition.setdefault(partition, []).extend(block.spans)
        rows += len(block)
        assert int((block.status == 0).sum()) <= len(answered)
        assert set(block.details) <= set(np.flatnonzero(block.status).tolist())
        codes = {DECLINE_CODES[k] for k in block.status.tolist()}
        assert "budget_exhausted" not in codes or len(answered) < len(p.answerable)
    assert rows == len(p)  # every row of every block, once
    expected: dict[int, list[tuple[str, int]]] = {}
    for partition, block_id, n in p.spans:
        expected.setdefault(partition, []).append((block_id, n))
    assert by_partition == expected  # the spans in record order, per partition
    total_answered = sum(int((decode_response_block(r).status == 0).sum()) for _, r in records)
    assert total_answered == len(answered)


@st.composite
def _blocks(draw: st.DrawFn) -> QueryBlock:
    n = draw(st.integers(1, 5))
    dtype = draw(st.sampled_from(["<f4", "<f2", "|u1"]))
    width = draw(st.sampled_from([64, 64, 8]))
    if dtype == "|u1":
        x: np.ndarray[Any, Any] = np.array(draw(st.lists(
            st.sampled_from([0, 16, 17, 255]), min_size=n * width, max_size=n * width)),
            np.uint8).reshape(n, width)
    else:
        values = draw(st.lists(st.sampled_from([0.5, 1.0, -1.0, np.nan, np.inf, 3e38]),
                               min_size=n * width, max_size=n * width))
        with np.errstate(over="ignore"):  # 3e38 as <f2 is inf: another bad row
            x = np.array(values).astype(dtype).reshape(n, width)
    times = st.sampled_from([0, NOW - 1, NOW, NOW + 59_999, NOW + 60_001, 2**63 - 1, -2**63])
    created = np.array(draw(st.lists(times, min_size=n, max_size=n)), np.int64)
    deadline = np.array(draw(st.lists(times, min_size=n, max_size=n)), np.int64)
    return QueryBlock("b", "digits", created, deadline, x,
                      1 / 16 if dtype == "|u1" else None,
                      strategy=draw(st.sampled_from([None, "median", "best_vote"])))


@settings(max_examples=200, deadline=None)
@given(block=_blocks())
def test_a_participant_declines_exactly_what_the_aggregator_rejects(block: QueryBlock) -> None:
    """Row for row: a row not expired is declined as bad_input iff the aggregator rejects it
    (validation.block_problems), with the same text: no privacy spent on a rejected row."""
    from fi_stream.validation import block_problems

    problems = block_problems(block, TASK, 60_000)
    p = prepare([(0, encode_query_block(block))], DIGITS, NOW, 60_000)
    for row, problem in enumerate(problems):
        if int(block.deadline_ms[row]) <= NOW:
            assert p.status[row] == DECLINE_CODES.index("expired")
        elif problem is None:
            assert p.status[row] == 0
        else:
            assert p.status[row] == DECLINE_CODES.index("bad_input")
            assert p.details[row] == problem


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks=st.lists(_blocks(), min_size=1, max_size=8),
       tasks=st.lists(st.sampled_from(["digits", "digits", "digits", "cifar"]), min_size=8,
                      max_size=8),
       cap=st.sampled_from([None, 60_000]), grants=st.lists(st.integers(0, 6), min_size=8,
                                                             max_size=8))
def test_screening_a_batch_is_screening_block_by_block(
        blocks: list[QueryBlock], tasks: list[str], cap: int | None, grants: list[int]) -> None:
    """prepare screens a micro-batch's rows at once (screening.screen_batch): the same
    statuses, details and inputs as screen() block by block, on any mix of tasks, dtypes,
    shapes, strategies, times and values; and the quota's cut lands on the same rows."""
    from dataclasses import replace

    from fi_stream.screening import QUOTA_EXHAUSTED, screen, screen_batch
    from schemas.blocks.codec import query_block_parts

    raws = [encode_query_block(replace(b, block_id=f"b{i}", task=t))
            for i, (b, t) in enumerate(zip(blocks, tasks, strict=False))]
    status: list[int] = []
    details: dict[int, str] = {}
    inputs: list[np.ndarray[Any, Any]] = []
    for i, raw in enumerate(raws):
        one = screen(decode_query_block(raw), TASK, NOW, cap)
        if one.inputs is not None:
            one.limit(grants[i], QUOTA_EXHAUSTED, "client anonymous used its share of this "
                      "participant's budget")
        details.update({len(status) + r: text for r, text in one.details.items()})
        status.extend(one.status.tolist())
        inputs.extend([] if one.inputs is None else [one.inputs])
    p = prepare([(0, r) for r in raws], DIGITS, NOW, cap,
                quota=lambda i, _b, rows: grants[i])
    assert p.status.tolist() == status and p.details == details
    assert (p.inputs is None) == (not inputs)
    if inputs:
        np.testing.assert_array_equal(p.inputs, np.concatenate(inputs))
        assert p.answerable.tolist() == np.flatnonzero(np.array(status) == 0).tolist()
    # without a quota: screen_batch itself
    batch = screen_batch([query_block_parts(r) for r in raws], TASK, NOW, cap)
    alone = [screen(decode_query_block(r), TASK, NOW, cap) for r in raws]
    starts = np.cumsum([0] + [len(a.status) for a in alone]).tolist()
    assert batch.status.tolist() == np.concatenate([a.status for a in alone]).tolist()
    assert batch.details == {at + r: text for at, a in zip(starts, alone, strict=False)
                             for r, text in a.details.items()}
    chunks = [a.inputs for a in alone if a.inputs is not None]
    assert (batch.inputs is None) == (not chunks)
    if chunks:
        np.testing.assert_array_equal(batch.inputs, np.concatenate(chunks))


def test_bench_measures_both_sides() -> None:
    from fi_stream.bench_engine_blocks import measure

    row = measure(16, 0.05)
    assert row["raw_items_per_s"] > 0 and row["engine_over_raw"] > 0
