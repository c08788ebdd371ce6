"""Each result's aggregate, prediction and confidence, recomputed bit for bit over exactly
the rows it lists: in batches of equal shape (`fi_stream.batched.stack_maths`: the soft vote
and the batched part of each incentive method the log uses, checked against the per-query
functions on a sample), and through `aggregate` itself, the arbiter, for any result the
batch does not vouch for."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fi_stream.aggregation import STRATEGIES, aggregate, soft_vote_batch
from fi_stream.audit.context import AuditContext, Checked
from fi_stream.audit.rows import F64
from fi_stream.batched import stack_maths
from fi_stream.copycat import suspicious
from fi_stream.incentives import METHODS
from schemas import Result


@dataclass(frozen=True, slots=True)
class _Batch:
    """The rows of results with `k` rows of `width` each, and what the batched maths gives."""

    x: F64  # (n, k, width)
    finite: npt.NDArray[np.bool_]
    vector: F64
    prediction: npt.NDArray[np.intp]
    confidence: F64
    #: Per incentive method with a batched path (and whose check passed): per-query rows.
    pre: dict[str, Sequence[Any]]
    close: npt.NDArray[np.bool_]
    #: The batched soft vote equals the reference function on the first finite sample.
    trusted: bool


def recompute(ctx: AuditContext, checked: list[Checked]) -> None:
    """Aggregates of every result, in batches of equal shape; each checked bit for bit."""
    groups: dict[tuple[int, int], list[Checked]] = defaultdict(list)
    for c in checked:
        if not c.usable:
            continue
        if c.flat:
            groups[(len(c.flat), c.width)].append(c)
        elif _has_aggregate(c.result):
            ctx.findings.on_result(c.logged, "aggregate_mismatch",
                                   "no answers included, yet an aggregate is given")
    for (k, width), members in groups.items():
        batch = _batched(ctx, members, k, width)
        for i, c in enumerate(members):
            _check(ctx, c, batch, i)


def _has_aggregate(r: Result) -> bool:
    return r.aggregate is not None or r.prediction is not None or r.confidence is not None


def _batched(ctx: AuditContext, members: list[Checked], k: int, width: int) -> _Batch:
    idx = np.fromiter((i for c in members for i in c.flat), dtype=np.intp,
                      count=len(members) * k)
    x = ctx.rows.matrices[width][idx].reshape(len(members), k, width)
    finite: npt.NDArray[np.bool_] = np.asarray(np.isfinite(x).all(axis=(1, 2)))
    stds = np.array([[ctx.registry.noise_std(p) for p in c.ids] for c in members])
    with np.errstate(all="ignore"):
        close = suspicious(np.where(np.isfinite(x), x, 0.0), stds)
    first = int(np.argmax(finite))
    maths = None
    if finite[first]:
        with np.errstate(all="ignore"):
            maths = stack_maths(x, members[first].ids, _methods(ctx), check=first)
    if maths is None:
        with np.errstate(all="ignore"):
            vector, prediction, confidence = soft_vote_batch(x)
        return _Batch(x, finite, vector, prediction, confidence, {}, close, False)
    return _Batch(x, finite, maths.vector, maths.prediction, maths.confidence, maths.pre,
                  close, True)


def _methods(ctx: AuditContext) -> list[str]:
    """The label-free incentive methods the log's incentives name (their batched parts are
    computed with the soft vote, once per stack; label-based ones come from merit)."""
    return sorted({i.event.method for i in ctx.log.incentives} & METHODS.keys())


def _check(ctx: AuditContext, c: Checked, b: _Batch, i: int) -> None:
    if not b.finite[i]:
        c.usable = False
        ctx.findings.on_result(c.logged, "aggregate_mismatch",
                               "the listed rows contain NaN or Inf")
        return
    c.rows = b.x[i]
    c.close_pair = bool(b.close[i])
    if b.trusted:
        c.pre = {name: rows[i] for name, rows in b.pre.items()}
        if _equals_soft_vote(c.result, b, i):
            return
    reference(ctx, c)


def _equals_soft_vote(r: Result, b: _Batch, i: int) -> bool:
    t = r.aggregate
    return (r.strategy == "soft_vote" and t is not None and t.dtype == "<f8"
            and t.shape == (b.x.shape[2],) and t.data == b.vector[i].tobytes()
            and r.prediction == b.prediction[i] and r.confidence == b.confidence[i])


def reference(ctx: AuditContext, c: Checked) -> None:
    """The arbiter: `aggregate(rows, result.strategy)`, compared bit for bit."""
    r = c.result
    if r.strategy not in STRATEGIES or c.rows is None:
        return
    params = {"weights": r.weights} if r.weights is not None else {}
    agg = aggregate(c.rows, r.strategy, **params)
    t = r.aggregate
    flag = ctx.findings.on_result
    if (t is None or t.dtype != "<f8" or t.shape != agg.vector.shape
            or t.data != agg.vector.tobytes()):
        flag(c.logged, "aggregate_mismatch", f"recorded aggregate differs from {r.strategy} "
             f"over the {len(c.flat)} listed rows")
    if r.prediction != agg.prediction:
        flag(c.logged, "prediction_mismatch",
             f"prediction {r.prediction}, recomputed {agg.prediction}")
    if r.confidence != agg.confidence:
        flag(c.logged, "confidence_mismatch",
             f"confidence {r.confidence!r}, recomputed {agg.confidence!r}")
