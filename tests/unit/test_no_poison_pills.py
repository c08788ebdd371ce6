"""No record stops the federation: arbitrary bytes (and valid blocks with bytes flipped) and
arbitrary (finite or not) arrays go through every decode → join → aggregate → result block →
incentive path without an exception escaping, and bad input ends only as a DLQ reason, a
rejected result or an excluded row (issue 12, defect 1)."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fi_stream.aggregation import STRATEGIES
from fi_stream.engine import prepare
from fi_stream.join import JoinTable
from fi_stream.merit import LabeledQuery, merit_incentives
from fi_stream.models import ModelSpec
from fi_stream.results import IncentiveWindow, build_result, soft_vote_in_batches
from fi_stream.validation import readable_block_headers, screen_rows
from schemas import (
    DecodeError,
    Feedback,
    Privacy,
    Query,
    ResponseBatch,
    Tensor,
    Window,
    WindowRef,
    decode,
)
from schemas.blocks import (
    ResponseBlock,
    block_kind,
    decode_query_block,
    decode_response_block,
    decode_result_block,
    encode_query_block,
    encode_response_block,
    encode_result_block,
    query_block,
)
from schemas.blocks.convert import result_block_of, results_of
from tests.unit.test_aggregator_blocks import _record, _service

PRIVACY = Privacy(clip_norm=1.0, noise_multiplier=0.3)
MODEL = ModelSpec(architecture="digits-mlp", task="digits", version="1", input_shape=(4,),
                  num_classes=3, input_range=(0.0, 1.0))
KEY = Ed25519PrivateKey.generate()
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=32)
ANY_ROWS = st.integers(1, 3).flatmap(lambda w: arrays(np.float32, (3, w), elements=FLOATS))
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _valid_blocks() -> list[bytes]:
    q = encode_query_block(query_block("b", "digits", np.full((2, 4), 0.5, np.float32),
                                       created_at_ms=0, deadline_ms=10, quorum=2))
    r = encode_response_block(ResponseBlock(
        "p1", "p1-b", "digits", "1", PRIVACY, 1, 0, [("b", 2)],
        np.eye(2, 3, dtype=np.float32), np.zeros(2, np.uint8)))
    return [q, r]


@st.composite
def _flipped(draw: st.DrawFn) -> bytes:
    """A valid block with a few bytes changed, cut short or lengthened."""
    raw = bytearray(draw(st.sampled_from(_valid_blocks())))
    for _ in range(draw(st.integers(1, 4))):
        raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, 80))
    return bytes(raw[:len(raw) - cut] if draw(st.booleans()) else raw + b"\0" * cut)


@SETTINGS
@given(st.binary(max_size=300) | _flipped() | st.sampled_from(_valid_blocks()))
async def test_arbitrary_bytes_decode_or_fail_with_a_reason(raw: bytes) -> None:
    for read in (decode_query_block, decode_response_block, decode_result_block, block_kind):
        try:
            read(raw)
        except DecodeError as exc:
            assert exc.reason in {"malformed", "oversized", "unsupported_version", "invalid"}
    with contextlib.suppress(DecodeError):
        decode(raw, Feedback)
    readable_block_headers(raw)
    p = prepare([(0, raw)], MODEL, 0, 60_000)
    assert len(p.broken) + len(p.spans) + len(p.repeats) == 1
    # The aggregator: a DLQ record, rejected results or a join, never an exception.
    service, _ = _service()
    service._on_query(_record(service, service.topics.queries, 0, b"k", raw), 0)
    service._on_responses(_record(service, service.topics.responses, 0, b"k", raw), 0)
    await service._emit_ready(0)
    await service._emit_ready(100_000)


def _batch(pid: str, rows: np.ndarray[Any, Any], qids: list[str]) -> ResponseBatch:
    return ResponseBatch(participant_id=pid, batch_id=f"{pid}-b", task="digits",
                         model_version="1", privacy=PRIVACY, produced_at_ms=1,
                         query_partition=0, answered=qids, outputs=Tensor.from_numpy(rows))


@SETTINGS
@given(st.lists(ANY_ROWS, min_size=1, max_size=3), st.sampled_from(sorted(STRATEGIES)),
       st.lists(st.integers(-5, 2**70), min_size=3, max_size=3), st.booleans())
def test_arbitrary_answer_rows_are_excluded_or_aggregated_never_raise(
        matrices: list[np.ndarray[Any, Any]], strategy: str, labels: list[int],
        screen: bool) -> None:
    qids = ["b.0", "b.1", "b.2"]
    pids = [f"p{i}" for i in range(len(matrices))]
    t = JoinTable()
    for qid in qids:
        t.add_query(Query(query_id=qid, task="digits",
                          input=Tensor.from_numpy(np.zeros(4, np.float32)), created_at_ms=0,
                          deadline_ms=10, quorum=1), 0, 0, frozenset(pids))
    for offset, (pid, rows) in enumerate(zip(pids, matrices, strict=True)):
        # `screen`: as the aggregator does; without it, the join and build_result alone
        # must still keep a bad row out of the maths.
        exclusions = screen_rows(rows, PRIVACY, 3) if screen else None
        t.add_batch(_batch(pid, rows, qids), 0, offset, 5, exclusions)
    settled = t.take_settled()
    assert len(settled) == 3
    batched = soft_vote_in_batches(settled)
    window = IncentiveWindow(0, 0, 0, "loo_agreement")
    labeled = []
    for oq, label in zip(settled, labels, strict=True):
        result, ids, outputs = build_result(
            oq, strategy=strategy, completed_at_ms=7, window=WindowRef(partition=0, seq=0),
            weights={p: 1.0 for p in pids}, batched=batched.get(oq.query.query_id))
        # What goes on the wire reads back, exactly.
        block = decode_result_block(encode_result_block(result_block_of([result])))
        assert results_of(block) == [result]
        if outputs is not None:
            assert np.isfinite(outputs).all()
            labeled.append(LabeledQuery(participant_ids=ids, outputs=outputs, label=label))
        used = {a.participant_id for a in result.included}
        left_out = {e.participant_id for e in result.excluded}
        assert used.isdisjoint(left_out) and used | left_out == set(pids)
        if screen:
            for e in result.excluded:
                assert e.reason in {"non_finite", "wrong_width", "implausible_norm"}
        window.add(result, ids, outputs)
    incentives = window.close(budget=10.0)
    assert all(math.isfinite(i.score) or i.score != i.score for i in incentives)
    merit_incentives(Window(partition=0, seq=0, results=3, first_completed_at_ms=7,
                            last_completed_at_ms=7), labeled, {}, budget=10.0,
                     feedback_horizon=1)
