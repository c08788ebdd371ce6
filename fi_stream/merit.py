"""Merit-based incentives for a window, once labels have arrived on fi.feedback.

Pure: the results of the window (in fi.results order), the outputs they included, the
labels and the window's label-free rewards in; Incentive events out. The scores come
from the label-based method `METHOD` of the registry (`fi_stream.incentives.shapley`:
exact up to MAX_EXACT_SHAPLEY participants, Monte Carlo above), seeded from the window
so that a replay gets the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fi_stream.incentives import (
    get_labeled,
    skill_fairness,
    spearman,
    split_rewards,
)
from fi_stream.validation import label_problem
from schemas import Incentive, IncentiveCounts, Window

#: The label-based method the merit service runs (`fi_stream.incentives.registry`).
METHOD = "shapley"


@dataclass(frozen=True, kw_only=True)
class LabeledQuery:
    participant_ids: list[str]  # sorted, as in the Result
    outputs: np.ndarray[Any, Any]  # the included rows, same order
    label: int


def window_labels(feedback: Iterable[tuple[int, int, str, int]], partition: int,
                  horizon: int) -> dict[str, int]:
    """The labels a window of aggregator partition `partition` is scored with, from
    (partition, offset, query_id, label) feedback records in log order.

    Merit and the auditor both use this one rule: only fi.feedback partition `partition`
    (a label is keyed by its query's block id, `schemas.blocks.split_query_id(qid)[0]`, so
    it lands on the partition of that query block and of its results), only offsets
    below `horizon` (the `feedback_horizon` the incentive records), and the FIRST label of
    a query wins: a later, conflicting one changes nothing (merit dead-letters it).
    """
    out: dict[str, int] = {}
    for p, offset, query_id, label in feedback:
        if p == partition and offset < horizon and label_problem(label, None) is None:
            out.setdefault(query_id, label)
    return out


def usable_queries(queries: Sequence[LabeledQuery]) -> list[LabeledQuery]:
    """Queries whose outputs are a finite (k ≥ 1, C) matrix of its participants and whose
    label is a class of it (0 ≤ label < C): anything else cannot be scored."""
    out = []
    for q in queries:
        x = np.asarray(q.outputs)
        if (x.ndim == 2 and x.shape[0] == len(q.participant_ids) > 0 and x.shape[1] > 0
                and len(set(q.participant_ids)) == len(q.participant_ids)
                and label_problem(q.label, x.shape[1]) is None
                and np.isfinite(x.astype(np.float64)).all()):
            out.append(q)
    return out


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def merit_incentives(window: Window, queries: Sequence[LabeledQuery],
                     label_free_rewards: Mapping[str, float], *, budget: float,
                     feedback_horizon: int, permutations: int = 2000) -> list[Incentive]:
    """One `shapley` Incentive per participant seen in the window's labeled queries
    (those `usable_queries` keeps: a label outside the task's classes is left out)."""
    queries = usable_queries(queries)
    participants = sorted({p for q in queries for p in q.participant_ids}
                          | set(label_free_rewards))
    if not queries or not participants:
        return []
    phi, errors = get_labeled(METHOD).scores(
        participants, [(q.participant_ids, q.outputs) for q in queries],
        [q.label for q in queries], (window.partition, window.seq), permutations)
    rewards = split_rewards(phi, budget)
    fairness = _finite(skill_fairness(phi, label_free_rewards))
    rho = _finite(spearman(dict(label_free_rewards), phi))
    included = {p: sum(p in q.participant_ids for q in queries) for p in participants}
    return [
        Incentive(participant_id=p, window=window, method=METHOD, score=phi[p],
                  reward=rewards[p], budget=budget,
                  counts=IncentiveCounts(included=included[p]), labeled=len(queries),
                  feedback_horizon=feedback_horizon, stderr=errors.get(p),
                  skill_fairness=fairness, rank_correlation=rho)
        for p in participants
    ]
