"""From rows of a joined query block to their results, vectorized over the rows.

`settle(ob, rows, ...)` is `fi_stream.results.build_result` for many queries of one block
at once: the same status rule (`status_of`: included < quorum → insufficient, else
complete when nobody expected is missing, late or excluded, else partial), the same
included answers (usable rows, by participant id), and the same aggregate, BIT FOR BIT:

- soft vote (and the weighted strategies without weights, which reduce to it) is one
  masked sum over the [P, n, C] stack: left-out rows add −0.0, the exact identity of IEEE
  addition, so each query sums exactly its included rows, in participant-id order, as
  `np.mean` does on its (k, C) stack;
- other strategies are grouped by inclusion pattern; a group runs a batched form of the
  strategy where one exists (hard vote, median, trimmed mean, weighted) and today's
  `fi_stream.aggregation.aggregate` query by query where none does (entropy_weighted,
  js_consensus).

Every vectorized result is checked against `aggregate` on one query (as
`fi_stream.results.batch_matches` does); a numpy build that reduces in another order
(e.g. C = 1, where numpy sums a contiguous column pairwise) falls back to the per-query
path, so the output never differs from today's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fi_stream.aggregation import STRATEGIES, aggregate, takes_weights, to_simplex
from fi_stream.block_state import ANSWERED, LATE, NONE, Codes, Mask, OpenBlock
from schemas import Result, Tensor, WindowRef
from schemas.blocks import (
    DECLINE_CODES,
    DECLINED_BASE,
    EXCLUDED_BASE,
    EXCLUSION_CODES,
    RESULT_CODES,
    ResultBlock,
    query_id,
)

F64 = npt.NDArray[np.float64]
#: A batched strategy: (Q, k, C) stack and the k weights (or None) → (Q, C) vectors.
Batched = Callable[[F64, F64 | None], F64]

#: A result block's role of a participant its row's Result does not name at all.
UNLISTED = 4
NON_FINITE = EXCLUDED_BASE + EXCLUSION_CODES.index("non_finite")
COMPLETE, PARTIAL, INSUFFICIENT = (RESULT_CODES.index(s)
                                   for s in ("complete", "partial", "insufficient"))


@dataclass(frozen=True, slots=True, eq=False)
class BlockOutcome:
    """The results of `rows` (block row numbers, increasing) of one query block.

    Columns are `participants`, sorted by id. `roles[i, p]`: result-block role codes
    (0 missing, 1 included, 2 late, 10 + k declined, 20 + k excluded; an answered row that
    is not finite is excluded here, as `build_result` does). Rows without an aggregate
    (insufficient) have NaN `aggregate`, −1 `prediction` and NaN `confidence`. `width[i]`
    is the row's answer width (−1: none); `aggregate` is [n, max width], NaN-padded.
    `weights[i, p]`: a weighted strategy's weight of an included answer, NaN elsewhere
    (None: unweighted, or no weights given)."""

    rows: npt.NDArray[np.intp]
    participants: list[str]
    roles: Codes
    status: Codes
    included: npt.NDArray[np.int64]
    aggregate: F64
    prediction: npt.NDArray[np.int64]
    confidence: F64
    width: npt.NDArray[np.int64]
    weights: F64 | None
    #: Column → (partition, offset) of the participant's response record.
    refs: dict[int, tuple[int, int]]
    #: [n, P] <i4: each answer's index among its record's answered rows (-1: none).
    index: npt.NDArray[np.int32]


def status_codes(included: npt.NDArray[np.int64], quorum: int,
                 missing: npt.NDArray[np.int64]) -> Codes:
    """`fi_stream.results.status_of` for every row (RESULT_CODES indices)."""
    codes: Codes = np.where(included < quorum, INSUFFICIENT,
                            np.where(missing == 0, COMPLETE, PARTIAL)).astype(np.uint8)
    return codes


def settle(ob: OpenBlock, rows: Mask, *, strategy: str,
           weights: Mapping[str, float] | None = None) -> BlockOutcome:
    """The results of `rows` of `ob` (a `Ready`'s rows), as `build_result` would give
    each. `strategy`: the block's, or the configured one; `weights`: participant → weight
    for a weighted strategy (absent: 0; none at all: the plain mean)."""
    idx = np.flatnonzero(rows)
    order = sorted(range(len(ob.participants)), key=ob.participants.__getitem__)
    pids = [ob.participants[j] for j in order]
    roles = ob.roles[order][:, idx] if order else np.zeros((0, len(idx)), np.uint8)
    stacks = [_rows_of(ob, j, idx, roles[p]) for p, j in enumerate(order)]
    usable = roles == ANSWERED
    k = usable.sum(axis=0).astype(np.int64)
    expected = np.array([pid in ob.expected for pid in pids], np.bool_)
    unheard = ((roles == NONE) & expected[:, None]) | (roles == LATE) | (roles >= EXCLUDED_BASE)
    status = status_codes(k, ob.block.quorum, unheard.sum(axis=0).astype(np.int64))
    w_col = None
    if weights and takes_weights(strategy):
        w_col = np.array([_weight(weights.get(pid, 0.0)) for pid in pids], np.float64)
    width = ob.width[idx]
    vec, pred, conf = _aggregate_by_width(stacks, usable, width, strategy, w_col)
    return BlockOutcome(
        idx, pids, np.ascontiguousarray(roles.T), status, k, vec, pred, conf,
        np.where(k > 0, width, -1),
        None if w_col is None else np.where(usable.T, w_col[None, :], np.nan),
        {p: ref for p, j in enumerate(order) if (ref := ob.refs[j]) is not None},
        np.ascontiguousarray(ob.index[order][:, idx].T if order
                             else np.zeros((len(idx), 0), np.int32)))


def _rows_of(ob: OpenBlock, j: int, idx: npt.NDArray[np.intp], roles: Codes) -> F64 | None:
    """Column j's answer rows at `idx` (None: it answered none); answered rows that are
    not finite (or have no width) become excluded in `roles`, as in `build_result`."""
    out = ob.outputs[j]
    answered = roles == ANSWERED
    x = None if out is None or not answered.any() else np.asarray(out)[idx]
    if x is not None and x.ndim == 2 and x.shape[1] > 0:
        finite = np.isfinite(x).all(axis=1)
    else:
        finite = np.zeros(len(idx), np.bool_)
    roles[answered & ~finite] = NON_FINITE
    return x


def _weight(value: float) -> float:
    """A history weight `weighted` accepts (finite, >= 0), as `build_result` takes it."""
    w = float(value)
    return w if np.isfinite(w) and w >= 0 else 0.0


def _aggregate_by_width(stacks: list[F64 | None], usable: Mask, width: npt.NDArray[np.int64],
                        strategy: str, w_col: F64 | None
                        ) -> tuple[F64, npt.NDArray[np.int64], F64]:
    """Aggregate each group of rows that share an answer width (one group, normally)."""
    n = usable.shape[1]
    has = usable.any(axis=0)
    c_max = int(width[has].max()) if has.any() else 0
    vec = np.full((n, c_max), np.nan)
    pred = np.full(n, -1, np.int64)
    conf = np.full(n, np.nan)
    for c in np.unique(width[has]).tolist():
        cols = [p for p, x in enumerate(stacks) if x is not None and x.shape[1] == c]
        sel = np.flatnonzero(has & (width == c))
        x = np.stack([stacks[p][sel] for p in cols]).astype(np.float64)  # type: ignore[index]
        u = usable[cols][:, sel]
        w = None if w_col is None else w_col[cols]
        v, pr, cf = aggregate_masked(x, u, strategy, w)
        vec[sel, :c], pred[sel], conf[sel] = v, pr, cf
    return vec, pred, conf


def aggregate_masked(x: F64, usable: Mask, strategy: str, w_col: F64 | None
                     ) -> tuple[F64, npt.NDArray[np.int64], F64]:
    """Per query q: `aggregate(x[usable[:, q], q], strategy, weights=...)` for a [P, Q, C]
    stack (participants by id) and its [P, Q] mask; every query has ≥ 1 usable row."""
    if strategy == "soft_vote" or (w_col is None and strategy in STRATEGIES
                                    and takes_weights(strategy)):
        k = usable.sum(axis=0)
        total = np.where(usable[:, :, None], x, -0.0).sum(axis=0)
        vec: F64 = total / k[:, None]
        pred, conf = _decide(vec)
        if _matches(x[usable[:, 0], 0], strategy, None, vec[0], int(pred[0]), conf[0]):
            return vec, pred, conf
    return _by_pattern(x, usable, strategy, w_col)


def _decide(vec: F64) -> tuple[npt.NDArray[np.int64], F64]:
    """`aggregate`'s prediction (argmax) and confidence (its simplex share), per row."""
    pred = vec.argmax(axis=1).astype(np.int64)
    conf: F64 = to_simplex(vec)[np.arange(len(vec)), pred]
    return pred, conf


def _matches(x: F64, strategy: str, w: F64 | None, vector: F64, prediction: int,
             confidence: float) -> bool:
    want = _one(x, strategy, w)
    return (want[0].tobytes() == vector.tobytes() and want[1] == prediction
            and want[2] == confidence)


def _one(x: F64, strategy: str, w: F64 | None) -> tuple[F64, int, float]:
    """Today's per-query call, exactly as `build_result` makes it."""
    params: dict[str, Any] = {} if w is None else {"weights": w.tolist()}
    agg = aggregate(x, strategy, **params)
    return agg.vector, agg.prediction, agg.confidence


def _by_pattern(x: F64, usable: Mask, strategy: str, w_col: F64 | None
                ) -> tuple[F64, npt.NDArray[np.int64], F64]:
    """Group the queries by who is included; batched form per group, or per query."""
    p_count, q_count, c = x.shape
    vec = np.empty((q_count, c))
    pred = np.empty(q_count, np.int64)
    conf = np.empty(q_count)
    codes = (usable.astype(np.int64) << np.arange(p_count, dtype=np.int64)[:, None]).sum(0)
    patterns, inverse = np.unique(codes, return_inverse=True)
    batched = BATCHED.get(strategy)
    for g in range(len(patterns)):
        qs = np.flatnonzero(inverse == g)
        who = usable[:, qs[0]]
        xg = np.ascontiguousarray(x[who][:, qs].transpose(1, 0, 2))  # (m, k, C)
        w = None if w_col is None else w_col[who]
        if batched is not None:
            v = batched(xg, w)
            pr, cf = _decide(v)
            if _matches(xg[0], strategy, w, v[0], int(pr[0]), cf[0]):
                vec[qs], pred[qs], conf[qs] = v, pr, cf
                continue
        for i, q in enumerate(qs.tolist()):
            vec[q], pred[q], conf[q] = _one(xg[i], strategy, w)
    return vec, pred, conf


def _soft_vote(x: F64, w: F64 | None) -> F64:
    out: F64 = x.mean(axis=1)
    return out


def _weighted(x: F64, w: F64 | None) -> F64:
    """`aggregation._weighted_mean` over axis 1; all-zero (or no) weights: plain mean."""
    if w is None or not w.sum() > 0:
        w = np.ones(x.shape[1])
    out: F64 = (w[None, :, None] * x).sum(axis=1) / w.sum()
    return out


def _hard_vote(x: F64, w: F64 | None) -> F64:
    votes = (x.argmax(axis=2)[:, :, None] == np.arange(x.shape[2])).sum(axis=1)
    out: F64 = votes.astype(np.float64) / x.shape[1]
    return out


def _median(x: F64, w: F64 | None) -> F64:
    out: F64 = np.median(x, axis=1)
    return out


def _trimmed_mean(x: F64, w: F64 | None, trim: float = 0.2) -> F64:
    s = np.sort(x, axis=1)
    k = x.shape[1]
    cut = min(int(np.floor(trim * k)), (k - 1) // 2)
    out: F64 = s[:, cut:k - cut].mean(axis=1)
    return out


#: Strategies with a batched form over a (Q, k, C) stack (checked against `aggregate`).
BATCHED: Mapping[str, Batched] = {
    "soft_vote": _soft_vote, "hard_vote": _hard_vote, "median": _median,
    "trimmed_mean": _trimmed_mean, "weighted": _weighted, "reward_weighted": _weighted,
    "spectral": _weighted,
}


def to_result_blocks(ob: OpenBlock, outcome: BlockOutcome, *, strategy: str,
                     completed_at_ms: int, window: WindowRef) -> list[ResultBlock]:
    """The result block(s) of `outcome`, built with numpy over the rows (O(P) Python):
    one, unless rows were aggregated at different answer widths (a block's aggregates
    share one width), then one per width. `results_of` of them gives `to_results`."""
    width = outcome.width
    widths = np.unique(width[width >= 0]).tolist()
    if len(widths) <= 1:
        groups = [np.arange(len(outcome.rows))]
    else:
        groups = [np.flatnonzero((width == c) | ((width < 0) if c == widths[0] else False))
                  for c in widths]
    expected = np.array([pid in ob.expected for pid in outcome.participants], np.bool_)
    out = []
    for sel in groups:
        roles = outcome.roles[sel].copy()
        roles[(roles == NONE) & ~expected[None, :]] = UNLISTED
        answer = (roles == ANSWERED) | (roles >= EXCLUDED_BASE)
        cols = np.flatnonzero(answer.any(axis=0)).tolist()
        response = np.full(roles.shape, -1, np.int32)
        for r, p in enumerate(cols):
            response[answer[:, p], p] = r
        c = max(0, int(width[sel].max()))
        rows = outcome.rows[sel]
        block = ob.block
        out.append(ResultBlock(
            block.block_id, block.task, strategy, block.quorum, window,
            list(outcome.participants), rows.astype(np.int32), outcome.status[sel],
            outcome.aggregate[sel, :c], outcome.prediction[sel], outcome.confidence[sel],
            roles, response, np.where(answer, outcome.index[sel], -1).astype(np.int32),
            block.created_at_ms[rows], block.deadline_ms[rows],
            np.full(len(sel), completed_at_ms, np.int64),
            None if outcome.weights is None else outcome.weights[sel],
            [outcome.refs[p] for p in cols]))
    return out


def to_results(ob: OpenBlock, outcome: BlockOutcome, *, strategy: str, completed_at_ms: int,
               window: WindowRef) -> list[Result]:
    """One `Result` per row, as `build_result` builds it (no copies screened), for a
    consumer that still reads per-query results. Python per query: the block path emits
    a result block instead (schemas.blocks.ResultBlock carries the same fields)."""
    block = ob.block
    return [Result(query_id=query_id(block.block_id, row), task=block.task,
                   status=RESULT_CODES[int(outcome.status[i])], strategy=strategy,
                   quorum=block.quorum, created_at_ms=int(block.created_at_ms[row]),
                   deadline_ms=int(block.deadline_ms[row]), completed_at_ms=completed_at_ms,
                   window=window, **_fields(ob, outcome, i))
            for i, row in enumerate(outcome.rows.tolist())]


def _fields(ob: OpenBlock, outcome: BlockOutcome, i: int) -> dict[str, Any]:
    """Row i's participants (and aggregate) as `Result` fields."""
    roles = outcome.roles[i].tolist()
    names = outcome.participants
    ids = [p for p, r in enumerate(roles) if r == ANSWERED]
    fields: dict[str, Any] = {
        "included": [_where(outcome, p, i) for p in ids],
        "declined": [{"participant_id": names[p], "reason": DECLINE_CODES[r - DECLINED_BASE]}
                     for p, r in enumerate(roles) if DECLINED_BASE <= r < EXCLUDED_BASE],
        "late": [names[p] for p, r in enumerate(roles) if r == LATE],
        "missing": [pid for p, pid in enumerate(names) if roles[p] == NONE
                    and pid in ob.expected],
        "excluded": [{**_where(outcome, p, i), "reason": EXCLUSION_CODES[r - EXCLUDED_BASE]}
                     for p, r in enumerate(roles) if r >= EXCLUDED_BASE]}
    if ids:
        fields.update(_aggregate_fields(outcome, i, ids))
    return fields


def _aggregate_fields(outcome: BlockOutcome, i: int, ids: list[int]) -> dict[str, Any]:
    c = int(outcome.width[i])
    fields: dict[str, Any] = {"aggregate": Tensor.from_numpy(outcome.aggregate[i, :c]),
                              "prediction": int(outcome.prediction[i]),
                              "confidence": float(outcome.confidence[i])}
    if outcome.weights is not None:
        fields["weights"] = [float(outcome.weights[i, p]) for p in ids]
    return fields


def _where(outcome: BlockOutcome, p: int, i: int) -> dict[str, Any]:
    partition, offset = outcome.refs[p]
    return {"participant_id": outcome.participants[p], "partition": partition,
            "offset": offset, "index": int(outcome.index[i, p])}
