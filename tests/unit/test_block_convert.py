"""Blocks ↔ views (schemas.blocks.convert): the result block gives back, exactly, the Results
fi_stream.results makes (every status, declines of each reason, late, missing, excluded of
each reason, copies, weights, reasons), through the encoded bytes; queries and responses
views agree with the blocks row for row."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fi_stream.join import Answer, OpenQuery
from fi_stream.results import build_result, unanswered_result
from fi_stream.validation import QueryHeader
from schemas import Query, Result, Tensor, WindowRef
from schemas.blocks import (
    DECLINE_CODES,
    EXCLUSION_CODES,
    ResponseBlock,
    decode_query_block,
    decode_response_block,
    decode_result_block,
    encode_query_block,
    encode_response_block,
    encode_result_block,
    query_block,
    query_id,
    split_query_id,
)
from schemas.blocks.convert import queries_of, response_batch_of, result_block_of, results_of
from schemas.events import Privacy

PIDS = [f"p{i}" for i in range(6)]
WIDTH = 3
ROLES = ("answer", "decline", "late", "missing", "excluded", "copied", "unexpected")
STRATEGIES = ("soft_vote", "reward_weighted", "median", "hard_vote")

finite = st.floats(-4, 4, allow_nan=False, width=32)
vectors = st.lists(finite, min_size=WIDTH, max_size=WIDTH).map(
    lambda v: np.array(v, dtype=np.float32))


@st.composite
def open_query(draw: Any, block_id: str, row: int, quorum: int) -> tuple[OpenQuery, list[Any]]:
    """A joined query in any state, and the copies screened out of it."""
    q = Query(query_id=query_id(block_id, row), task="digits", quorum=quorum,
              input=Tensor.from_numpy(np.zeros(2, np.float32)),
              created_at_ms=draw(st.integers(0, 10**6)), deadline_ms=draw(st.integers(0, 10**6)))
    roles = {p: draw(st.sampled_from(ROLES)) for p in PIDS}
    oq = OpenQuery(q, 0, row, frozenset(p for p, r in roles.items() if r != "unexpected"))

    def answer(pid: str, excluded: Any = None) -> Answer:
        return Answer(pid, draw(vectors), draw(st.integers(0, 2)), draw(st.integers(0, 3)),
                      draw(st.integers(0, 5)), 1, excluded)

    copied = []
    for pid, role in roles.items():
        if role == "answer":
            oq.answers[pid] = answer(pid)
        elif role == "decline":
            oq.declines[pid] = draw(st.sampled_from(DECLINE_CODES[1:]))
        elif role == "late":
            oq.late.add(pid)
        elif role == "excluded":
            oq.excluded[pid] = answer(pid, draw(st.sampled_from(EXCLUSION_CODES)))
    sources = sorted(oq.answers)
    for pid, role in roles.items():
        if role == "copied" and sources:
            copied.append((answer(pid), draw(st.sampled_from(sources))))
    return oq, draw(st.permutations(copied))


@st.composite
def results(draw: Any) -> list[Result]:
    """The results of some rows of one block, settled together, in any row order."""
    block_id = draw(st.sampled_from(["b", "c-1.x", "client:7.42"]))
    strategy = draw(st.sampled_from(STRATEGIES))
    quorum = draw(st.integers(1, 3))
    window = WindowRef(partition=draw(st.integers(0, 3)), seq=draw(st.integers(0, 9)))
    weights = draw(st.none() | st.dictionaries(st.sampled_from(PIDS),
                                                st.floats(0, 9, allow_nan=False)))
    out = []
    for row in draw(st.lists(st.integers(0, 40), min_size=1, max_size=6, unique=True)):
        completed = draw(st.integers(0, 10**6))
        kind = draw(st.sampled_from(["joined", "rejected", "insufficient"]))
        if kind == "joined":
            oq, copied = draw(open_query(block_id, row, quorum))
            result, _, _ = build_result(oq, strategy=strategy, completed_at_ms=completed,
                                        window=window, weights=weights, copied=copied)
        else:
            header = QueryHeader(query_id(block_id, row), "digits", 5, 6, quorum)
            result = unanswered_result(header, status=kind, reason=draw(st.text(max_size=20)),
                                       strategy=strategy, completed_at_ms=completed,
                                       window=window)
        out.append(result)
    return out


@settings(max_examples=150, deadline=None)
@given(results())
def test_results_round_trip_exactly_through_the_bytes(rs: list[Result]) -> None:
    block = result_block_of(rs)
    back = results_of(decode_result_block(encode_result_block(block)))
    assert back == rs
    for a, b in zip(back, rs, strict=True):  # Tensor dtypes and bytes, not just values
        assert (a.aggregate is None) == (b.aggregate is None)
        if a.aggregate is not None and b.aggregate is not None:
            assert (a.aggregate.dtype, a.aggregate.data) == (b.aggregate.dtype, b.aggregate.data)
        assert a.model_dump_json() == b.model_dump_json()
    assert decode_result_block(encode_result_block(block)).query_ids == [r.query_id for r in rs]


def test_every_status_decline_exclusion_and_copy_is_covered() -> None:
    """Every case, drawn deterministically (hypothesis may or may not reach them all)."""
    seen: set[str] = set()
    rng = np.random.default_rng(0)
    for i in range(200):
        oq = OpenQuery(Query(query_id=f"b.{i}", task="t", input=Tensor.from_numpy(
            np.zeros(1, np.float32)), created_at_ms=0, deadline_ms=0, quorum=1 + i % 2), 0, i,
            frozenset(PIDS))
        for j, pid in enumerate(PIDS):
            role = "answer" if i % 3 == 0 else ROLES[(i + j) % len(ROLES)]
            vec = rng.normal(size=WIDTH).astype(np.float32)
            if role == "answer":
                oq.answers[pid] = Answer(pid, vec, 0, i, j, 1)
            elif role == "decline":
                oq.declines[pid] = DECLINE_CODES[1 + i % 5]  # type: ignore[assignment]
            elif role == "late":
                oq.late.add(pid)
            elif role == "excluded":
                oq.excluded[pid] = Answer(pid, vec, 1, i, j, 1,
                                          EXCLUSION_CODES[i % 4])  # type: ignore[arg-type]
        copied = [(Answer("p9", np.zeros(WIDTH, np.float32), 2, i, 0, 1), min(oq.answers))
                  ] if oq.answers else []
        r, _, _ = build_result(oq, strategy="reward_weighted", completed_at_ms=i,
                               window=WindowRef(partition=0, seq=0), weights={"p0": 2.0},
                               copied=copied)
        assert results_of(decode_result_block(encode_result_block(result_block_of([r])))) == [r]
        seen.add(r.status)
        seen.update(d.reason for d in r.declined)
        seen.update(e.reason for e in r.excluded)
        seen.update("copied" for _ in r.copied)
    assert seen >= {"complete", "partial", "insufficient", "copied", *DECLINE_CODES[1:],
                    *EXCLUSION_CODES}


def test_result_block_of_refuses_what_it_could_not_give_back() -> None:
    window = WindowRef(partition=0, seq=0)
    base: dict[str, Any] = {"task": "t", "status": "insufficient", "strategy": "soft_vote",
                            "quorum": 1, "created_at_ms": 0, "deadline_ms": 0,
                            "completed_at_ms": 0, "window": window}
    with pytest.raises(ValueError, match="participant order"):
        result_block_of([Result(query_id="b.0", missing=["z", "a"], **base)])
    with pytest.raises(ValueError, match="twice"):
        result_block_of([Result(query_id="b.0", missing=["a"], late=["a"], **base)])
    with pytest.raises(ValueError, match="block"):
        result_block_of([Result(query_id="b.0", **base), Result(query_id="c.1", **base)])
    with pytest.raises(ValueError, match="twice"):
        result_block_of([Result(query_id="b.0", **base), Result(query_id="b.0", **base)])
    with pytest.raises(ValueError):
        result_block_of([Result(query_id="nodot", **base)])
    with pytest.raises(ValueError):
        result_block_of([])


def test_split_query_id() -> None:
    assert split_query_id(query_id("a.b-1", 7)) == ("a.b-1", 7)
    for bad in ("a", ".3", "a.", "a.01", "a.-1", "a.x", "a.١"):
        with pytest.raises(ValueError):
            split_query_id(bad)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.sampled_from(["<f4", "|u1", "<f2"]), st.integers(0, 9))
def test_queries_of_gives_the_model_rows(n: int, dtype: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    inputs = (rng.integers(0, 17, size=(n, 4)) if dtype == "|u1"
              else rng.normal(size=(n, 4))).astype(dtype)
    block = decode_query_block(encode_query_block(query_block(
        "blk.9", "digits", inputs, created_at_ms=np.arange(n), deadline_ms=50,
        input_scale=1 / 16 if dtype == "|u1" else None, quorum=2, strategy="median",
        client_id="c")))
    qs = queries_of(block)
    assert [q.query_id for q in qs] == block.query_ids == [f"blk.9.{i}" for i in range(n)]
    for i, q in enumerate(qs):
        assert q.input.dtype == "<f4"
        assert q.input.to_numpy().tobytes() == block.model_inputs()[i].tobytes()
        assert (q.created_at_ms, q.deadline_ms, q.quorum, q.strategy, q.client_id) == (
            i, 50, 2, "median", "c")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=3), st.integers(0, 99))
def test_response_batch_of_answers_and_declines_in_record_order(spans: list[int],
                                                                 seed: int) -> None:
    rng = np.random.default_rng(seed)
    total = sum(spans)
    status = rng.integers(0, len(DECLINE_CODES), size=total).astype("|u1")
    outputs = rng.normal(size=(total, WIDTH)).astype("<f4")
    outputs[status != 0] = 0
    details = {r: f"why {r}" for r in np.flatnonzero(status).tolist()[::2]}
    block = decode_response_block(encode_response_block(ResponseBlock(
        "p1", "batch", "digits", "v1", Privacy(clip_norm=1.0, noise_multiplier=0.5), 3, 2,
        [(f"q{i}", rows) for i, rows in enumerate(spans)], outputs, status, details)))
    view = response_batch_of(block)
    ids = [f"q{i}.{r}" for i, rows in enumerate(spans) for r in range(rows)]
    assert block.query_ids == ids
    assert view.answered == [ids[r] for r in range(total) if status[r] == 0]
    assert view.outputs.to_numpy().tobytes() == outputs[status == 0].tobytes()
    assert view.outputs.shape == (len(view.answered), WIDTH)
    assert [(d.query_id, d.reason, d.detail) for d in view.declined] == [
        (ids[r], DECLINE_CODES[status[r]], details.get(r)) for r in range(total) if status[r]]
    assert (view.participant_id, view.query_partition, view.signature) == ("p1", 2, b"")
