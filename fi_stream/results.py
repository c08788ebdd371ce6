"""From a settled or due join to a Result.

Pure functions of the included answers (sorted by participant id, float64), so the
auditor recomputes exactly what the aggregator emitted. The batched maths is in
`fi_stream.batched`, the incentive window in `fi_stream.incentives.window` (both also
importable from here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fi_stream.aggregation import aggregate, takes_weights
from fi_stream.batched import Batched, batch_matches, soft_vote_in_batches
from fi_stream.incentives.window import IncentiveWindow
from fi_stream.join import Answer, OpenQuery
from fi_stream.validation import QueryHeader
from schemas import Result, ResultStatus, Tensor, WindowRef
from schemas.blocks.convert import TENSOR_FIELDS, trusted
from schemas.tensor import MAX_TENSOR_BYTES

__all__ = ["Batched", "IncentiveWindow", "batch_matches", "build_result",
           "soft_vote_in_batches", "status_of", "unanswered_result"]


def status_of(included: int, quorum: int, missing: int) -> ResultStatus:
    """`missing`: expected participants without a usable answer (missing, late, excluded)."""
    if included < quorum:
        return "insufficient"
    return "complete" if missing == 0 else "partial"


def build_result(oq: OpenQuery, *, strategy: str, completed_at_ms: int, window: WindowRef,
                 weights: Mapping[str, float] | None = None, batched: Batched | None = None,
                 copied: Sequence[tuple[Answer, str]] = (),
                 ) -> tuple[Result, list[str], np.ndarray[Any, Any] | None]:
    """The Result plus the included ids and their output rows (for the incentive window).

    A weighted strategy takes each included participant's weight from `weights` (absent:
    0; none at all: the plain mean) and the Result records them. `batched`: the soft vote
    already computed by `soft_vote_in_batches`. `copied`: answers taken out as copies
    (`fi_stream.copycat.screen_copies`), listed in the Result, neither used nor missing.
    """
    excluded = dict(oq.excluded)
    usable = _usable(oq)
    for pid in oq.answers.keys() - usable.keys():  # the join lets none through; be sure
        a = oq.answers[pid]
        excluded[pid] = type(a)(a.participant_id, a.vector, a.partition, a.offset, a.index,
                                a.produced_at_ms, "non_finite")
    ids = sorted(usable)
    copiers = {a.participant_id for a, _ in copied}  # they responded, with a copy
    missing = sorted(oq.expected - oq.responded - copiers)
    late = sorted(oq.late)
    outputs = None
    fields: dict[str, Any] = {}
    if ids:
        if batched is not None and strategy == "soft_vote" and len(ids) == len(oq.answers):
            outputs, agg = batched.outputs, batched.aggregate
        else:
            outputs = np.stack([usable[i].vector for i in ids]).astype(np.float64)
            params: dict[str, Any] = {}
            if weights and takes_weights(strategy):
                params["weights"] = [_weight(weights.get(i, 0.0)) for i in ids]
                fields["weights"] = params["weights"]
            agg = aggregate(outputs, strategy, **params)
        fields.update(aggregate=_tensor(agg.vector), prediction=agg.prediction,
                      confidence=agg.confidence)
    q = oq.query
    # Nested parts as plain dicts: validated in the same (single) call as the Result, not
    # one model construction each (most of a Result's cost at thousands per second).
    result = Result(
        query_id=q.query_id, task=q.task,
        status=status_of(len(ids), q.quorum, len(missing) + len(late) + len(excluded)),
        included=[{"participant_id": i, "partition": usable[i].partition,
                   "offset": usable[i].offset, "index": usable[i].index}
                  for i in ids],
        declined=[{"participant_id": p, "reason": r} for p, r in sorted(oq.declines.items())],
        late=late, missing=missing,
        excluded=[{"participant_id": p, "partition": a.partition, "offset": a.offset,
                   "index": a.index, "reason": a.excluded}
                  for p, a in sorted(excluded.items())],
        copied=[{"participant_id": a.participant_id, "partition": a.partition,
                 "offset": a.offset, "index": a.index, "copy_of": of} for a, of in copied],
        strategy=strategy, quorum=q.quorum,
        created_at_ms=q.created_at_ms, deadline_ms=q.deadline_ms,
        completed_at_ms=completed_at_ms, window=window, **fields,
    )
    return result, ids, outputs


def _usable(oq: OpenQuery) -> dict[str, Any]:
    """The answers `aggregate` accepts: finite rows of one width (the join's checks, again,
    so that no input makes `build_result` raise)."""
    answers = {p: a for p, a in oq.answers.items()
               if a.vector.ndim == 1 and a.vector.size and (
                   a.finite if a.finite is not None else np.isfinite(a.vector).all())}
    if not answers:
        return {}
    width = answers[min(answers)].vector.shape
    return {p: a for p, a in answers.items() if a.vector.shape == width}


def _tensor(vector: np.ndarray[Any, Any]) -> Tensor:
    """`Tensor.from_numpy(vector)`, for the usual <f8 vector without validating it again
    (a Tensor of an array's own dtype, shape and bytes is valid)."""
    if vector.dtype.str != "<f8" or vector.ndim != 1 or vector.nbytes > MAX_TENSOR_BYTES:
        return Tensor.from_numpy(vector)
    return trusted(Tensor, {"dtype": "<f8", "shape": (int(vector.shape[0]),),
                            "data": vector.tobytes()}, TENSOR_FIELDS)


def _weight(value: float) -> float:
    """A history weight `weighted` accepts (finite, >= 0)."""
    w = float(value)
    return w if np.isfinite(w) and w >= 0 else 0.0


def unanswered_result(header: QueryHeader, *, status: ResultStatus, reason: str,
                      strategy: str, completed_at_ms: int, window: WindowRef) -> Result:
    """The Result of a query settled without asking anyone: `rejected` (the query is
    invalid) or `insufficient` (no registered participant serves its task)."""
    return Result(query_id=header.query_id, task=header.task, status=status,
                  reason=reason[:1000], strategy=strategy, quorum=header.quorum,
                  created_at_ms=header.created_at_ms, deadline_ms=header.deadline_ms,
                  completed_at_ms=completed_at_ms, window=window)
