"""The aggregator on the block wire, without a broker: query block and response block
records in, one result block record per query block and pass out (key = block id, on the
query's partition), carrying exactly the per-query Results the incentive windows were fed;
what is not a valid block goes to the DLQ and never stops it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from aiokafka import ConsumerRecord, TopicPartition
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.aggregator import AggregatorService
from consumers.aggregator_blocks import RESULT_HEADERS, ResultBlocks, Settled, emitted_query_ids
from consumers.aggregator_commit import Out
from fi_stream.block_signing import sign_response_block
from fi_stream.join import JoinTable
from fi_stream.settings import Settings
from fi_stream.signing import public_key_bytes
from fi_stream.validation import block_problems, query_problem, readable_block_headers
from schemas import Participant, Privacy, Query, Result, TaskSpec, Tensor, WindowRef
from schemas.blocks import (
    DECLINE_CODES,
    ResponseBlock,
    decode_result_block,
    encode_query_block,
    encode_response_block,
    query_block,
)
from schemas.blocks.convert import queries_of, result_block_of, results_of

NOW = 1_700_000_000_000
PRIVACY = Privacy(clip_norm=1.0, noise_multiplier=0.0)
KEYS = {pid: Ed25519PrivateKey.generate() for pid in ("p1", "p2")}


class Producer:
    """Never used: the tests look at the outbox, not at transactions."""


def _service(spec: TaskSpec | None = None) -> tuple[AggregatorService, list[Result]]:
    """An aggregator owning partition 0 with p1, p2 serving "digits"; and the Results its
    incentive windows are fed, in order."""
    service = AggregatorService(Settings())
    service._owned.add(0)
    service._tx.positions[TopicPartition(service.topics.queries, 0)] = 0
    for pid, key in KEYS.items():
        service.registry.participants[pid] = Participant(
            participant_id=pid, public_key=public_key_bytes(key), tasks=["digits"],
            model_version="1", privacy=PRIVACY, registered_at_ms=0,
            task_specs=[spec] if spec is not None else None)
    fed: list[Result] = []
    add = service._history.add

    def spy(partition: int, now: int, result: Result, *args: Any, **kw: Any) -> None:
        fed.append(result)
        add(partition, now, result, *args, **kw)

    service._history.add = spy  # type: ignore[method-assign]
    return service, fed


def _record(service: AggregatorService, topic: str, offset: int, key: bytes,
            value: bytes) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(topic, 0, offset, NOW, 0, key, value, None, len(key), len(value), [])


def _queries(service: AggregatorService, block_id: str, inputs: np.ndarray[Any, Any],
             offset: int = 0, **kw: Any) -> None:
    raw = encode_query_block(query_block(block_id, "digits", inputs, created_at_ms=NOW,
                                         deadline_ms=NOW + 60_000, **kw))
    service._on_query(_record(service, service.topics.queries, offset, block_id.encode(), raw),
                      NOW)


def _response_raw(pid: str, spans: list[tuple[str, int]], outputs: np.ndarray[Any, Any],
                  status: list[int] | None = None, key: Ed25519PrivateKey | None = None
                  ) -> bytes:
    codes = np.array(status if status is not None else [0] * len(outputs), dtype=np.uint8)
    block = ResponseBlock(pid, f"{pid}-b", "digits", "1", PRIVACY, NOW + 1, 0, spans,
                          np.where(codes[:, None] == 0, outputs, 0).astype(np.float32), codes)
    return sign_response_block(encode_response_block(block), key or KEYS[pid])


def _responses(service: AggregatorService, offset: int, raw: bytes) -> None:
    service._on_responses(_record(service, service.topics.responses, offset, b"p", raw), NOW)


def _outs(service: AggregatorService, topic: str) -> list[Out]:
    return [o for o in service._tx.outbox if o.topic == topic]


def _dead_letters(service: AggregatorService) -> list[bytes]:
    return [dict(o.headers)["error"] for o in _outs(service, service.topics.dlq)]


def _emitted(service: AggregatorService) -> list[Result]:
    return [r for o in _outs(service, service.topics.results)
            for r in results_of(decode_result_block(o.value))]


def _rows(n: int, width: int = 3, seed: int = 0) -> np.ndarray[Any, Any]:
    x = np.random.default_rng(seed).random((n, width), dtype=np.float32)
    out: np.ndarray[Any, Any] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out  # within the clip norm


async def test_a_query_block_and_its_response_blocks_become_one_result_block() -> None:
    service, fed = _service()
    _queries(service, "b", np.zeros((3, 4), np.float32))
    assert sorted(service.join.open) == ["b.0", "b.1", "b.2"]
    _responses(service, 0, _response_raw("p1", [("b", 3)], _rows(3)))
    declines = [0, 0, DECLINE_CODES.index("budget_exhausted")]
    _responses(service, 1, _response_raw("p2", [("b", 3)], _rows(3, seed=1), declines))
    await service._emit_ready(NOW + 2)

    (out,) = _outs(service, service.topics.results)
    assert (out.partition, out.key, out.headers) == (0, b"b", RESULT_HEADERS)
    emitted = _emitted(service)
    assert emitted == fed  # the wire carries exactly what the windows were fed
    assert [r.query_id for r in emitted] == ["b.0", "b.1", "b.2"]
    assert [r.status for r in emitted] == ["complete"] * 3
    assert [[a.participant_id for a in r.included] for r in emitted] == [
        ["p1", "p2"], ["p1", "p2"], ["p1"]]
    assert emitted[2].declined[0].reason == "budget_exhausted"
    assert emitted[1].included[1].offset == 1 and emitted[1].included[1].index == 1
    assert service.join.open == {} and service.emitted == 3


async def test_one_response_record_answers_several_blocks_and_each_gets_its_own_record() -> None:
    service, fed = _service()
    _queries(service, "a", np.zeros((2, 4), np.float32), offset=0)
    _queries(service, "c", np.zeros((1, 4), np.float32), offset=1)
    for offset, pid in enumerate(("p1", "p2")):
        _responses(service, offset, _response_raw(pid, [("a", 2), ("c", 1)], _rows(3)))
    await service._emit_ready(NOW + 2)
    outs = _outs(service, service.topics.results)
    assert sorted(o.key for o in outs) == [b"a", b"c"]
    assert sorted(r.query_id for r in _emitted(service)) == ["a.0", "a.1", "c.0"]
    assert sorted(_emitted(service), key=lambda r: r.query_id) == sorted(
        fed, key=lambda r: r.query_id)


async def test_a_blocks_results_mark_holds_until_its_last_row_is_out() -> None:
    """Rows settled in different passes: one record per pass, and the commit metadata keeps
    the block's results mark until its last row is out (a restart must find the first
    record)."""
    service, fed = _service()
    service._tx.results_next[0] = 7
    _queries(service, "b", np.zeros((2, 4), np.float32))
    for offset, pid in enumerate(("p1", "p2")):
        _responses(service, offset, _response_raw(pid, [("b", 1)], _rows(1)))
    await service._emit_ready(NOW + 2)
    assert [r.query_id for r in _emitted(service)] == ["b.0"]
    service._tx.results_next[0] = 8  # as the transaction that carried it would set
    assert service.join.oldest_results_mark(0) == 7
    assert '"results_from":7' in service._resume_state(0)
    await service._emit_ready(NOW + 60_001 + service.settings.timing.lag_grace_ms)
    assert [r.query_id for r in _emitted(service)] == ["b.0", "b.1"]
    assert fed[1].status == "insufficient" and fed[1].missing == ["p1", "p2"]
    assert len(_outs(service, service.topics.results)) == 2
    assert service.join.oldest_results_mark(0) is None


async def test_windows_take_results_in_the_order_they_are_written() -> None:
    """Settled a.0 and b.0, then a.1 due, in one pass: the log holds [a.0, a.1] then [b.0],
    and the windows are fed in that order (the audit replays them so: an order-sensitive
    incentive method must see the same float sums)."""
    service, fed = _service()
    _queries(service, "a", np.zeros((2, 4), np.float32), offset=0)
    _queries(service, "b", np.zeros((1, 4), np.float32), offset=1)
    for offset, pid in enumerate(("p1", "p2")):
        _responses(service, 2 * offset, _response_raw(pid, [("a", 1)], _rows(1)))
        _responses(service, 2 * offset + 1, _response_raw(pid, [("b", 1)], _rows(1, seed=1)))
    assert list(dict.fromkeys(service.join._settled)) == ["a.0", "b.0"]  # settle order
    await service._emit_ready(NOW + 60_001 + service.settings.timing.lag_grace_ms)
    written = [r.query_id for r in _emitted(service)]
    assert written == ["a.0", "a.1", "b.0"]
    assert [r.query_id for r in fed] == written
    assert service._history.windows[0].results == 3


async def test_invalid_rows_are_rejected_and_the_others_joined() -> None:
    service, _ = _service()
    inputs = np.zeros((3, 4), np.float32)
    inputs[1, 2] = np.nan
    _queries(service, "b", inputs)
    assert sorted(service.join.open) == ["b.0", "b.2"]
    await service._emit_ready(NOW)
    (rejected,) = _emitted(service)
    assert rejected.query_id == "b.1" and rejected.status == "rejected"
    assert rejected.reason == "bad_input: input contains NaN or Inf"


async def test_a_block_nobody_serves_is_insufficient_row_by_row() -> None:
    service, _ = _service()
    raw = encode_query_block(query_block("u", "speech", np.zeros((2, 4), np.float32),
                                         created_at_ms=NOW, deadline_ms=NOW + 60_000))
    service._on_query(_record(service, service.topics.queries, 0, b"u", raw), NOW)
    await service._emit_ready(NOW)
    assert [(r.query_id, r.status) for r in _emitted(service)] == [
        ("u.0", "insufficient"), ("u.1", "insufficient")]
    assert len(_outs(service, service.topics.results)) == 1


async def test_a_block_that_does_not_decode_is_dead_lettered_and_its_rows_rejected() -> None:
    service, _ = _service()
    raw = encode_query_block(query_block("x", "digits", np.zeros((2, 4), np.float32),
                                         created_at_ms=NOW, deadline_ms=NOW + 5))
    service._on_query(_record(service, service.topics.queries, 0, b"x", raw + b"\0" * 64),
                      NOW)
    await service._emit_ready(NOW)
    (dlq,) = _outs(service, service.topics.dlq)
    assert dlq.value == raw + b"\0" * 64 and _dead_letters(service) == [b"malformed"]
    emitted = _emitted(service)
    assert [(r.query_id, r.status, r.deadline_ms) for r in emitted] == [
        ("x.0", "rejected", NOW + 5), ("x.1", "rejected", NOW + 5)]
    assert (emitted[0].reason or "").startswith("malformed")


async def test_negative_times_do_not_stop_the_aggregator() -> None:
    service, _ = _service()
    raw = encode_query_block(query_block("n", "digits", np.zeros((1, 4), np.float32),
                                         created_at_ms=-5, deadline_ms=NOW))
    service._on_query(_record(service, service.topics.queries, 0, b"n", raw), NOW)
    await service._emit_ready(NOW)
    assert _dead_letters(service) == [b"invalid"]
    assert [(r.status, r.created_at_ms) for r in _emitted(service)] == [("rejected", 0)]


@pytest.mark.parametrize("raw", [b"", b"garbage", b"FIBK" + b"\1\1" + b"\0" * 20, None])
async def test_garbage_goes_to_the_dlq_on_both_topics(raw: bytes | None) -> None:
    service, _ = _service()
    service._on_query(_record(service, service.topics.queries, 0, b"k", raw or b""), NOW)
    _responses(service, 0, raw or b"")
    await service._emit_ready(NOW)
    assert len(_outs(service, service.topics.dlq)) == 2
    assert _outs(service, service.topics.results) == []


async def test_forged_and_unknown_responses_are_dead_lettered_not_joined() -> None:
    service, _ = _service()
    _queries(service, "b", np.zeros((1, 4), np.float32))
    _responses(service, 0, _response_raw("p1", [("b", 1)], _rows(1), key=KEYS["p2"]))
    _responses(service, 1, _response_raw("p3", [("b", 1)], _rows(1), key=KEYS["p2"]))
    assert _dead_letters(service) == [b"bad_signature", b"unknown_participant"]
    assert service.join.open["b.0"].answers == {}


async def test_implausible_rows_are_excluded_and_the_record_dead_lettered() -> None:
    service, fed = _service()
    _queries(service, "b", np.zeros((2, 4), np.float32))
    _responses(service, 0, _response_raw("p1", [("b", 2)], _rows(2) * 10))
    _responses(service, 1, _response_raw("p2", [("b", 2)], _rows(2)))
    await service._emit_ready(NOW + 2)
    assert _dead_letters(service) == [b"implausible_answer"]
    emitted = _emitted(service)
    assert emitted == fed
    assert [[e.reason for e in r.excluded] for r in emitted] == [["implausible_norm"]] * 2


async def test_a_block_sent_twice_is_dead_lettered_once() -> None:
    service, _ = _service()
    _queries(service, "b", np.zeros((3, 4), np.float32), offset=0)
    _queries(service, "b", np.zeros((3, 4), np.float32), offset=1)
    assert _dead_letters(service) == [b"duplicate_query"]
    assert service.join.duplicates == 3


def _result(qid: str, *, seq: int = 0, strategy: str = "soft_vote",
            width: int | None = None) -> Result:
    fields: dict[str, Any] = {}
    if width is not None:
        fields = {"aggregate": Tensor.from_numpy(np.full(width, 1 / width)), "prediction": 0,
                  "confidence": 1 / width,
                  "included": [{"participant_id": "p1", "partition": 0, "offset": 0,
                                "index": 0}]}
    return Result(query_id=qid, task="digits",
                  status="complete" if width is not None else "insufficient",
                  strategy=strategy, quorum=1, created_at_ms=NOW, deadline_ms=NOW,
                  completed_at_ms=NOW, window=WindowRef(partition=0, seq=seq), **fields)


def test_result_blocks_split_only_what_one_record_cannot_hold() -> None:
    blocks = ResultBlocks()
    for r in (_result("b.2", width=3), _result("b.0", width=3), _result("b.1"),
              _result("b.3", strategy="median"), _result("b.4", width=2),
              _result("c.0", width=3)):
        blocks.add(0, Settled(r))
    assert len(blocks) == 6
    taken = blocks.take()
    assert [(p, b) for p, b, _, _ in taken] == [(0, "b")] * 3 + [(0, "c")]
    rows = [[r.query_id for r in results_of(decode_result_block(v))] for _, _, v, _ in taken]
    assert rows == [["b.0", "b.1", "b.2"], ["b.4"], ["b.3"], ["c.0"]]
    # What the windows are given: the same results, in the same (log) order.
    assert [[s.result.query_id for s in part] for *_, part in taken] == rows
    assert blocks.take() == []


def test_emitted_ids_come_from_result_blocks_and_ignore_anything_else() -> None:
    value = _encoded([_result("b.0"), _result("b.5")])
    assert emitted_query_ids([value, b"junk", None]) == {"b.0", "b.5"}


def _encoded(results: list[Result]) -> bytes:
    from schemas.blocks import encode_result_block

    return encode_result_block(result_block_of(results))


SPEC = TaskSpec(task="digits", input_shape=(4,), input_min=0.0, input_max=1.0, num_classes=3)
VALUES = st.sampled_from([0.0, 0.5, 1.0, -0.1, 1.5, np.nan, np.inf, 3e38])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.lists(VALUES, min_size=4, max_size=4),
                          st.integers(0, 120_000), st.integers(0, 2**62)),
                min_size=1, max_size=6),
       st.sampled_from([None, "median", "nonsense"]), st.sampled_from([SPEC, None]),
       st.sampled_from([(4,), (2, 2)]), st.sampled_from(["<f4", "|u1"]))
def test_block_problems_are_query_problem_row_by_row(
        rows: list[tuple[list[float], int, int]], strategy: str | None,
        spec: TaskSpec | None, shape: tuple[int, ...], dtype: str) -> None:
    x = np.array([r[0] for r in rows], np.float64).reshape(len(rows), *shape)
    if dtype == "|u1":
        x = np.nan_to_num(np.clip(x, 0, 1) * 16).astype(np.uint8)
    created = np.array([r[2] for r in rows], np.int64)
    block = query_block("b", "digits", x.astype(dtype), created_at_ms=created,
                        deadline_ms=created + np.array([r[1] for r in rows], np.int64),
                        strategy=strategy, input_scale=1 / 16 if dtype == "|u1" else None)
    expected = [query_problem(q, spec, 60_000) for q in queries_of(block)]
    assert block_problems(block, spec, 60_000) == expected


def test_readable_block_headers_read_what_they_can() -> None:
    raw = encode_query_block(query_block("r", "digits", np.zeros((2, 4), np.float32),
                                         created_at_ms=NOW, deadline_ms=NOW + 9, quorum=2))
    headers = readable_block_headers(raw[:-8])
    assert headers is not None
    assert [(h.query_id, h.task, h.created_at_ms, h.deadline_ms, h.quorum) for h in headers] \
        == [("r.0", "digits", NOW, NOW + 9, 2), ("r.1", "digits", NOW, NOW + 9, 2)]
    assert readable_block_headers(raw[:40]) is None
    assert readable_block_headers(b"FIBK") is None and readable_block_headers(None) is None


def test_join_keeps_a_records_mark_while_any_of_its_rows_is_open() -> None:
    join = JoinTable()
    block = query_block("b", "digits", np.zeros((2, 4), np.float32), created_at_ms=NOW,
                        deadline_ms=NOW + 10)
    for q in queries_of(block):
        join.add_query(q, 0, 5, frozenset({"p1"}), results_mark=3)
    later = Query(query_id="c.0", task="digits", input=Tensor.from_numpy(np.zeros(4)),
                  created_at_ms=NOW, deadline_ms=NOW + 10)
    join.add_query(later, 0, 6, frozenset({"p1"}), results_mark=4)
    join.close(join.open["b.0"], NOW)
    assert join.oldest_results_mark(0) == 3
    join.close(join.open["b.1"], NOW)
    assert join.oldest_results_mark(0) == 4
