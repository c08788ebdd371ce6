"""Incentive maths: label-free scores per query and window, merit-based Shapley values,
reward splitting, and the measures that compare them (skill fairness, Spearman).

Everything is a pure function of the outputs an aggregator included (rows sorted by
participant id, float64), so the auditor recomputes every Incentive event exactly.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from fi_stream.aggregation import to_simplex
from fi_stream.errors import ConfigError

F64 = npt.NDArray[np.float64]


def loo_consensus(outputs: npt.ArrayLike) -> F64:
    """Row k: the mean of every OTHER row (k ≥ 2)."""
    x = np.asarray(outputs, dtype=np.float64)
    k = len(x)
    out: F64 = (x.sum(axis=0, keepdims=True) - x) / (k - 1)
    return out


def loo_agreement(outputs: npt.ArrayLike) -> F64:
    """1 where a participant's argmax equals that of the others' consensus, else 0."""
    x = np.asarray(outputs, dtype=np.float64)
    if len(x) < 2:
        return np.zeros(len(x))
    agree: F64 = (x.argmax(axis=1) == loo_consensus(x).argmax(axis=1)).astype(np.float64)
    return agree


def loo_cosine(outputs: npt.ArrayLike) -> F64:
    """Cosine similarity of each vector with the others' consensus (0 for zero vectors)."""
    x = np.asarray(outputs, dtype=np.float64)
    if len(x) < 2:
        return np.zeros(len(x))
    c = loo_consensus(x)
    norms = np.linalg.norm(x, axis=1) * np.linalg.norm(c, axis=1)
    dots = (x * c).sum(axis=1)
    cos: F64 = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)
    return cos


def loo_confidence_effect(outputs: npt.ArrayLike) -> F64:
    """How much the soft-vote ensemble's confidence in its own prediction drops without k."""
    x = np.asarray(outputs, dtype=np.float64)
    if len(x) < 2:
        return np.zeros(len(x))
    full = to_simplex(x.mean(axis=0))
    pred = int(full.argmax())
    without = to_simplex(loo_consensus(x))[:, pred]
    effect: F64 = full[pred] - without
    return effect


def final_agreement(outputs: npt.ArrayLike) -> F64:
    """Each query's unit of reward, split among those whose argmax matches the ensemble's."""
    x = np.asarray(outputs, dtype=np.float64)
    match = (x.argmax(axis=1) == x.mean(axis=0).argmax()).astype(np.float64)
    total = match.sum()
    share: F64 = match / total if total > 0 else np.zeros(len(x))
    return share


def entropy_score(outputs: npt.ArrayLike) -> F64:
    """Per query, exp(−H(p_k)) normalised to sum 1: confident participants earn more."""
    p = to_simplex(np.asarray(outputs, dtype=np.float64))
    logs = np.log(np.where(p > 0, p, 1.0))
    w = np.exp((p * logs).sum(axis=1))
    share: F64 = w / w.sum()
    return share


def equal_split(outputs: npt.ArrayLike) -> F64:
    k = len(np.asarray(outputs))
    return np.full(k, 1.0 / k)


LABEL_FREE_METHODS: Mapping[str, Callable[[npt.ArrayLike], F64]] = {
    "loo_agreement": loo_agreement,
    "loo_cosine": loo_cosine,
    "loo_confidence": loo_confidence_effect,
    "final_agreement": final_agreement,
    "entropy": entropy_score,
    "equal_split": equal_split,
}


def window_scores(per_query: Iterable[tuple[Sequence[str], npt.ArrayLike]],
                  method: str) -> dict[str, float]:
    """Sum a per-query label-free score over a window of (sorted ids, outputs) pairs."""
    fn = LABEL_FREE_METHODS.get(method)
    if fn is None:
        raise ConfigError(f"unknown incentive method {method!r}; known: "
                          f"{sorted(LABEL_FREE_METHODS)}")
    totals: dict[str, float] = {}
    for ids, outputs in per_query:
        for pid, score in zip(ids, fn(outputs), strict=True):
            totals[pid] = totals.get(pid, 0.0) + float(score)
    return totals


def split_rewards(scores: Mapping[str, float], budget: float) -> dict[str, float]:
    """The budget in proportion to positive scores; nothing for non-positive ones."""
    ids = sorted(scores)
    positive = np.array([max(0.0, scores[i]) for i in ids], dtype=np.float64)
    total = positive.sum()
    if total <= 0:
        return dict.fromkeys(ids, 0.0)
    return {i: float(budget * s / total) for i, s in zip(ids, positive, strict=True)}


# -- merit: Shapley values of ensemble accuracy ------------------------------------------------

Value = Callable[[frozenset[str]], float]


def ensemble_accuracy_value(outputs_by_query: Sequence[tuple[Sequence[str], npt.ArrayLike]],
                            labels: Sequence[int]) -> Value:
    """v(S): accuracy over the window of the soft vote of coalition S (cached per S)."""
    cache: dict[frozenset[str], float] = {}
    rows = [(list(ids), np.asarray(o, dtype=np.float64)) for ids, o in outputs_by_query]

    def value(coalition: frozenset[str]) -> float:
        if coalition not in cache:
            hits = 0
            for (ids, outputs), label in zip(rows, labels, strict=True):
                mask = [i in coalition for i in ids]
                if any(mask):
                    hits += int(outputs[mask].mean(axis=0).argmax() == label)
            cache[coalition] = hits / len(rows) if rows else 0.0
        return cache[coalition]

    return value


def shapley_exact(participants: Sequence[str], value: Value) -> dict[str, float]:
    """Exact Shapley values by coalition enumeration (2^N value calls; N ≤ 12)."""
    ids = sorted(participants)
    n = len(ids)
    if n > 12:
        raise ConfigError(f"exact Shapley over {n} participants is too costly; use Monte Carlo")
    weight = [math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in range(n)]
    phi = dict.fromkeys(ids, 0.0)
    for pid in ids:
        others = [i for i in ids if i != pid]
        for size in range(n):
            for subset in itertools.combinations(others, size):
                s = frozenset(subset)
                phi[pid] += weight[size] * (value(s | {pid}) - value(s))
    return phi


def shapley_monte_carlo(participants: Sequence[str], value: Value, permutations: int,
                        rng: np.random.Generator) -> tuple[dict[str, float], dict[str, float]]:
    """Permutation-sampling estimates and their standard errors."""
    ids = sorted(participants)
    samples: dict[str, list[float]] = {i: [] for i in ids}
    for _ in range(permutations):
        order = [ids[j] for j in rng.permutation(len(ids))]
        coalition: frozenset[str] = frozenset()
        before = value(coalition)
        for pid in order:
            coalition = coalition | {pid}
            after = value(coalition)
            samples[pid].append(after - before)
            before = after
    means = {i: float(np.mean(v)) for i, v in samples.items()}
    errors = {i: float(np.std(v, ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.inf
              for i, v in samples.items()}
    return means, errors


# -- comparing label-free and merit rewards ------------------------------------------------------

def _shares(values: Mapping[str, float], ids: Sequence[str]) -> F64:
    v = np.array([max(0.0, values.get(i, 0.0)) for i in ids], dtype=np.float64)
    out: F64 = v / v.sum() if v.sum() > 0 else np.zeros(len(ids))
    return out


def skill_fairness(merit: Mapping[str, float], rewards: Mapping[str, float]) -> float:
    """F = 1 − ½·‖p − r‖₁ over merit shares p and reward shares r (1 = perfectly fair)."""
    ids = sorted(set(merit) | set(rewards))
    return float(1.0 - 0.5 * np.abs(_shares(merit, ids) - _shares(rewards, ids)).sum())


def _ranks(v: F64) -> F64:
    order = v.argsort(kind="stable")
    ranks = np.empty(len(v), dtype=np.float64)
    ranks[order] = np.arange(len(v), dtype=np.float64)
    for value in np.unique(v):  # ties share their average rank
        tie = v == value
        ranks[tie] = ranks[tie].mean()
    return ranks


def spearman(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Rank correlation over common ids; nan with < 2 ids or no variance."""
    ids = sorted(set(a) & set(b))
    if len(ids) < 2:
        return math.nan
    ra = _ranks(np.array([a[i] for i in ids], dtype=np.float64))
    rb = _ranks(np.array([b[i] for i in ids], dtype=np.float64))
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])
