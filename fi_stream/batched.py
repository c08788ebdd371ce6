"""The batched maths: the soft vote and the incentive method's per-query work for many
queries at once, with the self-check that makes it safe to use.

One stack and a few ufuncs per set of included participants instead of a dozen small
numpy calls per query. The aggregator uses it for settled queries (`soft_vote_in_batches`);
the auditor can check a whole group of results with `stack_maths`. Both agree bit for bit
with the per-query functions on the numpy builds we test, and `stack_maths` checks the
first query of every stack against them: a build that reduces differently sends that
stack back to the per-query path instead of giving other numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from fi_stream.aggregation import Aggregate, aggregate
from fi_stream.copycat import suspicious
from fi_stream.incentives import METHODS, BatchedMethod, get_method, loo_agreement
from fi_stream.join import OpenQuery
from fi_stream.strategies.base import F64
from fi_stream.strategies.soft_vote import soft_vote_batch


@dataclass(frozen=True, slots=True)
class Batched:
    """One query's share of a stack: its rows, its soft vote, and per incentive method
    what that method's `add_batch` computed for it (`IncentiveWindow.add` takes it)."""

    outputs: np.ndarray[Any, Any]
    aggregate: Aggregate
    pre: Mapping[str, Any] = field(default_factory=dict)
    #: No pair of rows is within the noise (fi_stream.copycat.suspicious): nothing to screen.
    no_copies: bool = False


@dataclass(frozen=True, slots=True)
class StackMaths:
    """`stack_maths` of a (Q, k, C) stack: the soft vote of each query, and per method
    name the per-query rows of its `add_batch` (methods whose check failed are absent)."""

    vector: F64
    prediction: np.ndarray[Any, Any]
    confidence: F64
    pre: dict[str, Sequence[Any]]


def _same_state(method: str, ids: Sequence[str], x: F64, pre: Any) -> bool:
    """Does `add` with the batch's `pre` leave the very state `add` alone does?"""
    m = get_method(method)
    fast, slow = m.initialize(), m.initialize()
    m.add(fast, ids, x, pre)
    m.add(slow, ids, x)
    return orjson.dumps(fast) == orjson.dumps(slow)


def stack_maths(x: F64, ids: Sequence[str], methods: Sequence[str] = (),
                check: int = 0) -> StackMaths | None:
    """The soft vote of every query of the (Q, k, C) stack `x` (rows in `ids` order,
    finite) and the batched part of each method in `methods` that has one. Query `check`
    is recomputed with the per-query functions: None when the soft vote differs, and a
    method whose batch differs is left out."""
    vector, prediction, confidence = soft_vote_batch(x)
    want = aggregate(x[check], "soft_vote")
    if (want.vector.tobytes() != vector[check].tobytes()
            or want.prediction != int(prediction[check])
            or want.confidence != float(confidence[check])):
        return None
    pre: dict[str, Sequence[Any]] = {}
    for name in methods:
        m = get_method(name)
        if isinstance(m, BatchedMethod):
            rows = m.add_batch(x)
            if _same_state(name, ids, x[check], rows[check]):
                pre[name] = rows
    return StackMaths(vector, prediction, confidence, pre)


def batch_matches(x: np.ndarray[Any, Any], vector: np.ndarray[Any, Any], prediction: int,
                  confidence: float, agree: np.ndarray[Any, Any]) -> bool:
    """Does the batched maths equal the reference functions on the sample `x`? (The soft
    vote and `loo_agreement`; `stack_maths` checks any method. Kept for the auditor.)"""
    want = aggregate(x, "soft_vote")
    return (want.vector.tobytes() == vector.tobytes() and want.prediction == prediction
            and want.confidence == confidence
            and loo_agreement(x).tobytes() == agree.tobytes())


def _groups(queries: list[OpenQuery]) -> dict[tuple[Any, ...], list[OpenQuery]]:
    """Queries by (row shape, answering ids): each group stacks into one array."""
    groups: dict[tuple[Any, ...], list[OpenQuery]] = {}
    for oq in queries:
        if oq.answers:
            first = min(oq.answers)
            groups.setdefault((oq.answers[first].vector.shape, *sorted(oq.answers)),
                              []).append(oq)
    return groups


def _stack(members: list[OpenQuery], width: tuple[int, ...], ids: tuple[str, ...]
           ) -> F64 | None:
    """The group's (Q, k, C) float64 stack; None when a row has another shape or is not
    finite (`build_result` names the problem, query by query)."""
    if len(width) != 1 or width[0] == 0 or any(
            oq.answers[i].vector.shape != width for oq in members for i in ids):
        return None
    rows = np.stack([oq.answers[i].vector for oq in members for i in ids])
    x: F64 = rows.reshape(len(members), len(ids), -1).astype(np.float64)
    return x if np.isfinite(x).all() else None


def soft_vote_in_batches(queries: list[OpenQuery],
                         noise_std: Callable[[str], float] | None = None,
                         methods: Sequence[str] | None = None) -> dict[str, Batched]:
    """The per-query maths of `build_result` (soft vote) and `IncentiveWindow.add` (each
    of `methods` with a batched path; default: every registered one) for many queries.

    Bit for bit what the per-query functions give (`stack_maths`). With `noise_std`
    (participant → σ·C), the queries whose rows hold no pair within the noise are marked
    `no_copies` (the copy screen can skip them).
    """
    if methods is None:
        methods = sorted(n for n, m in METHODS.items() if isinstance(m, BatchedMethod))
    out: dict[str, Batched] = {}
    for (width, *rest), members in _groups(queries).items():
        ids = tuple(rest)
        x = _stack(members, width, ids)
        maths = None if x is None else stack_maths(x, ids, methods)
        if x is None or maths is None:
            continue
        clean = (~suspicious(x, [noise_std(i) for i in ids]) if noise_std is not None
                 else np.zeros(len(members), dtype=np.bool_))
        for j, oq in enumerate(members):
            out[oq.query.query_id] = Batched(
                x[j], Aggregate(maths.vector[j], int(maths.prediction[j]),
                                float(maths.confidence[j])),
                {name: rows[j] for name, rows in maths.pre.items()}, bool(clean[j]))
    return out
