"""What a label-free incentive method is, and the leave-one-out maths several share.

A method scores a window of results without labels. It owns the window's state (plain
JSON, carried in the commit metadata of the transaction that emits the results, so a
restarted aggregator resumes the window exactly) through four calls:

- `initialize()`: the empty state of a new window;
- `add(state, ids, outputs, pre)`: one result's included ids (sorted) and their rows;
- `add_batch(x)` (optional): for a (Q, k, C) stack of queries with the same ids, what
  `add` needs of each, computed in one vectorised pass; `add(..., pre=that[i])` then
  does for query i exactly what `add` alone does (checked on a sample before use:
  `fi_stream.batched`). Results are still added one at a time, in log order, so float
  sums keep the order the auditor replays;
- `close(state)`: each participant's score (pure: also the scores so far).

Everything is a pure function of the outputs an aggregator included (rows sorted by
participant id, float64), so the auditor recomputes every Incentive event exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from fi_stream.aggregation import as_outputs

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
State = dict[str, Any]


class IncentiveMethod(Protocol):
    #: Its key in the window's resume state ("scores": per-participant float sums).
    state_key: ClassVar[str]

    def initialize(self) -> State: ...

    def add(self, state: State, ids: Sequence[str], outputs: F64, pre: Any = None) -> None: ...

    def close(self, state: State) -> dict[str, float]: ...


@runtime_checkable
class BatchedMethod(IncentiveMethod, Protocol):
    def add_batch(self, x: F64) -> Sequence[Any]: ...


class LabeledMethod(Protocol):
    """A label-based method: scores from the window's labelled queries."""

    def scores(self, participants: Sequence[str],
               queries: Sequence[tuple[Sequence[str], npt.ArrayLike]], labels: Sequence[int],
               seed: Sequence[int], samples: int) -> tuple[dict[str, float], dict[str, float]]:
        """Each participant's score and, where estimated, its standard error; `seed`
        makes any sampling repeatable (a replay gets the same numbers), `samples` bounds
        its work."""
        ...


class PerQuerySum:
    """A method whose window score is the sum of per-query scores: `score` maps one
    query's (k, C) rows to (k,) scores; subclasses define it (and may add `add_batch`
    returning each query's scores as a list)."""

    state_key: ClassVar[str] = "scores"

    def score(self, outputs: F64) -> F64:
        raise NotImplementedError

    def initialize(self) -> State:
        return {}

    def add(self, state: State, ids: Sequence[str], outputs: F64, pre: Any = None) -> None:
        scores = pre if pre is not None else self.score(outputs).tolist()
        for pid, score in zip(ids, scores, strict=True):
            state[pid] = state.get(pid, 0.0) + float(score)

    def close(self, state: State) -> dict[str, float]:
        return dict(state)


def sorted_query(ids: Sequence[str], outputs: npt.ArrayLike) -> tuple[list[str], F64]:
    """Rows in participant-id order: the float64 sums then do not depend on arrival order."""
    x = as_outputs(outputs)
    if len(ids) != len(x):
        raise ValueError(f"{len(ids)} participant ids for {len(x)} output rows")
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate participant ids in one query: {sorted(ids)}")
    order = sorted(range(len(ids)), key=lambda j: ids[j])
    return [ids[j] for j in order], x[order]


def loo_consensus(outputs: npt.ArrayLike) -> F64:
    """Row k: the mean of every OTHER row, i.e. what the ensemble says without k."""
    x = as_outputs(outputs)
    k = len(x)
    if k < 2:
        raise ValueError("a leave-one-out consensus needs at least 2 participants")
    out: F64 = (x.sum(axis=0, keepdims=True) - x) / (k - 1)
    return out


def loo_votes_batch(x: F64) -> tuple[I64, I64]:
    """For a (Q, k ≥ 2, C) stack: each row's argmax and its leave-one-out consensus's."""
    k = x.shape[1]
    consensus = (x.sum(axis=1, keepdims=True) - x) / (k - 1)
    own: I64 = x.argmax(axis=2).astype(np.int64)
    peer: I64 = consensus.argmax(axis=2).astype(np.int64)
    return own, peer


def loo_votes(outputs: npt.ArrayLike) -> tuple[list[int], list[int]]:
    """Each row's argmax and its leave-one-out consensus's (k ≥ 2)."""
    own, peer = loo_votes_batch(as_outputs(outputs)[None])
    return own[0].tolist(), peer[0].tolist()
