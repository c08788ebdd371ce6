"""Blocks ↔ the per-query views (schemas.events `Query`, `ResponseBatch`, `Result`).

The views are API objects (QueryClient delivers `Result`s; the audit and the JoinTable take
them); the wire carries only blocks. These maps are exact: `results_of(result_block_of(rs))
== rs` for every Result `fi_stream.results` makes, and `result_block_of` raises ValueError
rather than encode a Result it could not give back as it was (a participant named twice, lists
out of participant order, weights not one per included answer, a non-float64 aggregate).
Building a view is per-query Python by nature; the blocks themselves are never looped over
on the wire path.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel

from schemas.blocks.codec import QueryBlock, ResponseBlock
from schemas.blocks.frame import Array
from schemas.blocks.headers import (
    DECLINE_CODES,
    DECLINED_BASE,
    EXCLUDED_BASE,
    EXCLUSION_CODES,
    MAX_BLOCK,
    RESULT_CODES,
    query_id,
    split_query_id,
)
from schemas.blocks.result import ResultBlock
from schemas.events import Query, ResponseBatch, Result
from schemas.tensor import MAX_TENSOR_BYTES, Tensor

MISSING, INCLUDED, LATE, COPIED, UNLISTED = 0, 1, 2, 3, 4


def queries_of(block: QueryBlock) -> list[Query]:
    """One `Query` per row; `input` is the row as the model sees it (<f4, scaled)."""
    inputs = block.model_inputs()
    created, deadline = block.created_at_ms.tolist(), block.deadline_ms.tolist()
    return [Query(query_id=query_id(block.block_id, n), task=block.task,
                  input=Tensor.from_numpy(inputs[n]), created_at_ms=created[n],
                  deadline_ms=deadline[n], quorum=block.quorum, strategy=block.strategy,
                  client_id=block.client_id)
            for n in range(len(block))]


#: schemas.events.Id's pattern (whole string).
_ID = re.compile(r"[A-Za-z0-9_.:\-]+").fullmatch
_QUERY_SET = frozenset(Query.model_fields) - {"schema_version"}
TENSOR_FIELDS = frozenset(Tensor.model_fields)
_VERSION = Query.model_fields["schema_version"].default
_new, _set = object.__new__, object.__setattr__
M = TypeVar("M", bound=BaseModel)


def trusted(cls: type[M], fields: dict[str, Any], fields_set: frozenset[str]) -> M:
    """What `cls.model_construct(**fields)` makes (fields in declaration order), at a
    fifth of its cost: no defaults to fill, no aliases, no post-init (`query_views`' test
    holds the views equal, field set included, to validated ones)."""
    m = _new(cls)
    _set(m, "__dict__", fields)
    _set(m, "__pydantic_fields_set__", set(fields_set))
    _set(m, "__pydantic_extra__", None)
    _set(m, "__pydantic_private__", None)
    return m


def _fields_valid(block: QueryBlock) -> bool:
    """Would every row's view take the block's own fields (derived ids included)?"""
    return (len(block.block_id) <= 122 and bool(_ID(block.block_id))
            and len(block.task) <= 128 and bool(_ID(block.task))
            and type(block.quorum) is int and block.quorum >= 1
            and type(block.client_id) is str
            and (block.strategy is None or type(block.strategy) is str))


def query_views(block: QueryBlock) -> list[Query]:
    """`queries_of(block)`, equal view for view, without validating each row: the
    aggregator makes a view per query at thousands per second (a validated `Query` and its
    `Tensor` cost ~20 µs, ~2 µs so). Only the query id, the input row and the times differ
    between rows, so when a few O(1) checks on the block show every row valid (a valid
    block id of ≤ 122 characters and ≤ MAX_BLOCK rows: every derived id is a valid id;
    times ≥ 0; a row within MAX_TENSOR_BYTES) the views are built unvalidated; otherwise
    `queries_of` says, row for row, what is wrong."""
    n = len(block)
    inputs = block.model_inputs()
    created, deadline = block.created_at_ms.tolist(), block.deadline_ms.tolist()
    if not (0 < n <= MAX_BLOCK and _fields_valid(block) and inputs.dtype == "<f4"
            and inputs[0].nbytes <= MAX_TENSOR_BYTES and min(created) >= 0
            and min(deadline) >= 0):
        return queries_of(block)
    shape = tuple(int(d) for d in inputs.shape[1:])
    b, task, quorum, strategy, client = (block.block_id, block.task, block.quorum,
                                         block.strategy, block.client_id)
    return [trusted(Query, {
        "schema_version": _VERSION, "query_id": query_id(b, i), "task": task,
        "input": trusted(Tensor, {"dtype": "<f4", "shape": shape,
                                   "data": inputs[i].tobytes()}, TENSOR_FIELDS),
        "created_at_ms": created[i], "deadline_ms": deadline[i], "quorum": quorum,
        "strategy": strategy, "client_id": client}, _QUERY_SET) for i in range(n)]


def response_batch_of(block: ResponseBlock) -> ResponseBatch:
    """The record as one `ResponseBatch`: answered rows (status 0) and declined rows, each in
    record order; signature b"" (the record's bytes are what is signed: block_signing)."""
    ids = block.query_ids
    status = block.status.tolist()
    answered = np.flatnonzero(block.status == 0)
    outputs = np.ascontiguousarray(block.outputs[answered], dtype="<f4")
    declined = [{"query_id": ids[r], "reason": DECLINE_CODES[status[r]],
                 "detail": block.details.get(r)}
                for r in np.flatnonzero(block.status != 0).tolist()]
    return ResponseBatch(
        participant_id=block.participant_id, batch_id=block.batch_id, task=block.task,
        model_version=block.model_version, privacy=block.privacy,
        produced_at_ms=block.produced_at_ms, query_partition=block.query_partition,
        answered=[ids[r] for r in answered.tolist()],
        outputs=Tensor.from_numpy(outputs.reshape(len(answered), block.outputs.shape[1])),
        declined=declined)


def _filled(shape: tuple[int, ...], value: float, dtype: str) -> Array:
    """np.full without its Python wrapper (six per result block, most of them of one row)."""
    out = np.empty(shape, dtype)
    out.fill(value)
    return out


class _Columns:
    """The [N, P] buffers of a result block being filled, one Result row at a time."""

    def __init__(self, results: Sequence[Result], participants: list[str]) -> None:
        n, p = len(results), len(participants)
        self.col = {pid: i for i, pid in enumerate(participants)}
        self.roles = _filled((n, p), UNLISTED, "|u1")
        self.response = _filled((n, p), -1, "<i4")
        self.index = _filled((n, p), -1, "<i4")
        weighted = any(r.weights is not None for r in results)
        self.weights = _filled((n, p), np.nan, "<f8") if weighted else None
        self.responses: dict[tuple[int, int], int] = {}
        self.copies: list[tuple[int, int, int]] = []

    def put(self, n: int, pid: str, role: int, answer: Any = None) -> int:
        p = self.col[pid]
        if self.roles[n, p] != UNLISTED:
            raise ValueError(f"row {n} names participant {pid!r} twice")
        self.roles[n, p] = role
        if answer is not None:
            ref = (answer.partition, answer.offset)
            self.response[n, p] = self.responses.setdefault(ref, len(self.responses))
            self.index[n, p] = answer.index
        return p

    def row(self, n: int, r: Result) -> None:
        _in_order(r)
        for a in r.included:
            self.put(n, a.participant_id, INCLUDED, a)
        for d in r.declined:
            self.put(n, d.participant_id, DECLINED_BASE + DECLINE_CODES.index(d.reason))
        for pid in r.late:
            self.put(n, pid, LATE)
        for pid in r.missing:
            self.put(n, pid, MISSING)
        for e in r.excluded:
            self.put(n, e.participant_id, EXCLUDED_BASE + EXCLUSION_CODES.index(e.reason), e)
        for c in r.copied:
            self.copies.append((n, self.put(n, c.participant_id, COPIED, c), self.col[c.copy_of]))
        if r.weights is not None:
            self.weigh(n, r)

    def weigh(self, n: int, r: Result) -> None:
        assert r.weights is not None and self.weights is not None
        if not r.weights or len(r.weights) != len(r.included) or not np.isfinite(
                r.weights).all():
            raise ValueError(f"{r.query_id}: weights must be one finite value per"
                             " included answer")
        self.weights[n, [self.col[a.participant_id] for a in r.included]] = r.weights


def _in_order(r: Result) -> None:
    """The lists a row gives back in column order must come in it (they do from
    fi_stream.results): anything else could not round-trip."""
    for name, ids in (("included", [a.participant_id for a in r.included]),
                      ("declined", [d.participant_id for d in r.declined]),
                      ("late", r.late), ("missing", r.missing),
                      ("excluded", [e.participant_id for e in r.excluded])):
        if ids != sorted(ids):
            raise ValueError(f"{r.query_id}: {name} is not in participant order")


def result_block_of(results: Sequence[Result]) -> ResultBlock:
    """The result block of `results`: rows of ONE query block (ids `B.n`, any subset, each
    once) with one task, strategy, quorum and window."""
    if not results:
        raise ValueError("a result block has at least one result")
    first = results[0]
    block_id = split_query_id(first.query_id)[0]
    rows = []
    for r in results:
        b, row = split_query_id(r.query_id)
        if b != block_id or (r.task, r.strategy, r.quorum, r.window) != (
                first.task, first.strategy, first.quorum, first.window):
            raise ValueError(f"{r.query_id}: not of block {block_id!r} with the same task,"
                             " strategy, quorum and window")
        rows.append(row)
    if len(set(rows)) != len(rows):
        raise ValueError(f"block {block_id!r}: a row's result is given twice")
    participants = sorted(_named(results))
    cols = _Columns(results, participants)
    for n, r in enumerate(results):
        cols.row(n, r)
    aggregate, prediction, confidence = _aggregates(results)
    return ResultBlock(
        block_id, first.task, first.strategy, first.quorum, first.window, participants,
        np.array(rows, dtype="<i4"),
        np.array([RESULT_CODES.index(r.status) for r in results], dtype="|u1"),
        aggregate, prediction, confidence, cols.roles, cols.response, cols.index,
        _times(results, "created_at_ms"), _times(results, "deadline_ms"),
        _times(results, "completed_at_ms"), cols.weights, list(cols.responses),
        {n: r.reason for n, r in enumerate(results) if r.reason is not None}, cols.copies)


def _named(results: Sequence[Result]) -> set[str]:
    out: set[str] = set()
    for r in results:
        out.update(a.participant_id for a in r.included)
        out.update(d.participant_id for d in r.declined)
        out.update(r.late)
        out.update(r.missing)
        out.update(e.participant_id for e in r.excluded)
        out.update(c.participant_id for c in r.copied)
        out.update(c.copy_of for c in r.copied)
    return out


def _times(results: Sequence[Result], name: str) -> Array:
    return np.array([getattr(r, name) for r in results], dtype="<i8")


def _aggregates(results: Sequence[Result]) -> tuple[Array, Array, Array]:
    """[N, C] <f8 (NaN rows: none), prediction (-1: none), confidence (NaN: none)."""
    widths = {r.aggregate.shape for r in results if r.aggregate is not None}
    if len(widths) > 1 or any(len(w) != 1 for w in widths):
        raise ValueError(f"aggregates must be vectors of one width; got shapes {widths}")
    width = widths.pop()[0] if widths else 0
    aggregate = _filled((len(results), width), np.nan, "<f8")
    prediction = _filled((len(results),), -1, "<i8")
    confidence = _filled((len(results),), np.nan, "<f8")
    for n, r in enumerate(results):
        if (r.aggregate is None, r.prediction is None, r.confidence is None) == (
                True, True, True):
            continue
        if r.aggregate is None or r.prediction is None or r.confidence is None or (
                r.aggregate.dtype != "<f8" or r.prediction < 0):
            raise ValueError(f"{r.query_id}: aggregate (<f8), prediction (≥ 0) and"
                             " confidence come together or not at all")
        aggregate[n] = r.aggregate.to_numpy()
        prediction[n], confidence[n] = r.prediction, r.confidence
    return aggregate, prediction, confidence


def results_of(block: ResultBlock) -> list[Result]:
    """One `Result` per row of `block`, exactly as `result_block_of` was given them."""
    roles, response, index = block.roles.tolist(), block.response.tolist(), block.index.tolist()
    copies: dict[int, list[tuple[int, int]]] = {}
    for n, p, of in block.copies:
        copies.setdefault(n, []).append((p, of))
    out = []
    for n, row in enumerate(block.rows.tolist()):
        lists = _lists(block, roles[n], response[n], index[n], copies.get(n, []))
        has = int(block.prediction[n]) >= 0
        weights = None
        if block.weights is not None and lists["included"]:
            ws = block.weights[n, [i for i, role in enumerate(roles[n]) if role == INCLUDED]]
            weights = None if np.isnan(ws).all() else ws.tolist()
        out.append(Result(
            query_id=query_id(block.block_id, row), task=block.task,
            status=RESULT_CODES[int(block.status[n])],
            aggregate=Tensor.from_numpy(block.aggregate[n]) if has else None,
            prediction=int(block.prediction[n]) if has else None,
            confidence=float(block.confidence[n]) if has else None,
            reason=block.reasons.get(n), strategy=block.strategy, weights=weights,
            quorum=block.quorum, created_at_ms=int(block.created_at_ms[n]),
            deadline_ms=int(block.deadline_ms[n]),
            completed_at_ms=int(block.completed_at_ms[n]), window=block.window, **lists))
    return out


def _lists(block: ResultBlock, roles: list[int], response: list[int], index: list[int],
           copies: list[tuple[int, int]]) -> dict[str, list[Any]]:
    """A row's participant lists, in column (participant id) order; copies in their order."""
    pids = block.participants
    out: dict[str, list[Any]] = {"included": [], "declined": [], "late": [], "missing": [],
                                 "excluded": [], "copied": []}

    def answer(p: int) -> dict[str, Any]:
        partition, offset = block.responses[response[p]]
        return {"participant_id": pids[p], "partition": partition, "offset": offset,
                "index": index[p]}

    for p, role in enumerate(roles):
        if role == INCLUDED:
            out["included"].append(answer(p))
        elif role == LATE:
            out["late"].append(pids[p])
        elif role == MISSING:
            out["missing"].append(pids[p])
        elif DECLINED_BASE <= role < EXCLUDED_BASE:
            out["declined"].append({"participant_id": pids[p],
                                    "reason": DECLINE_CODES[role - DECLINED_BASE]})
        elif role >= EXCLUDED_BASE:
            out["excluded"].append({**answer(p), "reason": EXCLUSION_CODES[role - EXCLUDED_BASE]})
    out["copied"] = [{**answer(p), "copy_of": pids[of]} for p, of in copies]
    return out
