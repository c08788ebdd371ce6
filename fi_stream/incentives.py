"""Incentive maths: label-free scores per query and window, merit-based Shapley values,
reward splitting, and the measures that compare them (skill fairness, Spearman).

Everything is a pure function of the outputs an aggregator included (rows sorted by
participant id, float64), so the auditor recomputes every Incentive event exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fi_stream.aggregation import as_outputs, entropy, to_simplex
from fi_stream.errors import ConfigError

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Value = Callable[[frozenset[str]], float]

#: Exact Shapley enumerates 2^N coalitions; above this use shapley_monte_carlo.
MAX_EXACT_SHAPLEY = 12


# -- label-free, per query: (k, C) outputs → (k,) scores ------------------------------------

def loo_consensus(outputs: npt.ArrayLike) -> F64:
    """Row k: the mean of every OTHER row, i.e. what the ensemble says without k."""
    x = as_outputs(outputs)
    k = len(x)
    if k < 2:
        raise ValueError("a leave-one-out consensus needs at least 2 participants")
    out: F64 = (x.sum(axis=0, keepdims=True) - x) / (k - 1)
    return out


def loo_agreement(outputs: npt.ArrayLike) -> F64:
    """1 where a participant's argmax equals that of the others' consensus, else 0."""
    x = as_outputs(outputs)
    if len(x) < 2:
        return np.zeros(len(x))
    agree: F64 = (x.argmax(axis=1) == loo_consensus(x).argmax(axis=1)).astype(np.float64)
    return agree


def loo_votes_batch(x: F64) -> tuple[I64, I64]:
    """For a (Q, k ≥ 2, C) stack: each row's argmax and its leave-one-out consensus's."""
    k = x.shape[1]
    consensus = (x.sum(axis=1, keepdims=True) - x) / (k - 1)
    own: I64 = x.argmax(axis=2).astype(np.int64)
    peer: I64 = consensus.argmax(axis=2).astype(np.int64)
    return own, peer


def loo_agreement_batch(x: F64) -> F64:
    """`loo_agreement(x[i])` for every i of a (Q, k, C) stack."""
    q, k, _ = x.shape
    if k < 2:
        return np.zeros((q, k))
    own, peer = loo_votes_batch(x)
    agree: F64 = (own == peer).astype(np.float64)
    return agree


def loo_cosine(outputs: npt.ArrayLike) -> F64:
    """Cosine similarity with the others' consensus; 0 when either vector is zero."""
    x = as_outputs(outputs)
    if len(x) < 2:
        return np.zeros(len(x))
    c = loo_consensus(x)
    norms = np.linalg.norm(x, axis=1) * np.linalg.norm(c, axis=1)
    dots = (x * c).sum(axis=1)
    cos: F64 = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)
    return cos


def loo_confidence_effect(outputs: npt.ArrayLike) -> F64:
    """How much k raises the soft vote's confidence in the answer it gives.

    Both ensembles (with and without k) are projected with `to_simplex` and read at
    the FULL ensemble's prediction, so a participant that tips the decision is credited
    for it rather than compared with a different class.
    """
    x = as_outputs(outputs)
    if len(x) < 2:
        return np.zeros(len(x))
    full = to_simplex(x.mean(axis=0))
    prediction = int(full.argmax())
    effect: F64 = full[prediction] - to_simplex(loo_consensus(x))[:, prediction]
    return effect


def final_agreement(outputs: npt.ArrayLike) -> F64:
    """Each query's unit of reward, split equally among those who said what the ensemble said."""
    x = as_outputs(outputs)
    match = (x.argmax(axis=1) == x.mean(axis=0).argmax()).astype(np.float64)
    total = match.sum()
    share: F64 = match / total if total > 0 else np.zeros(len(x))
    return share


def entropy_score(outputs: npt.ArrayLike) -> F64:
    """exp(−H(p_k)) normalised to sum 1 per query: confident participants earn more."""
    w = np.exp(-entropy(to_simplex(as_outputs(outputs))))
    share: F64 = w / w.sum()
    return share


def equal_split(outputs: npt.ArrayLike) -> F64:
    """1/k each: the baseline every other method should beat."""
    k = len(as_outputs(outputs))
    return np.full(k, 1.0 / k)


LABEL_FREE_METHODS: Mapping[str, Callable[[npt.ArrayLike], F64]] = {
    "loo_agreement": loo_agreement,
    "loo_cosine": loo_cosine,
    "loo_confidence_effect": loo_confidence_effect,
    "final_agreement": final_agreement,
    "entropy_score": entropy_score,
    "equal_split": equal_split,
}


# -- label-free, per window: peer prediction -------------------------------------------------

#: A participant's window tally: [agreements, its answer histogram (C), the consensus's (C)].
Tally = list[int]
Votes = tuple[Sequence[int], Sequence[int]]


def loo_votes(outputs: npt.ArrayLike) -> tuple[list[int], list[int]]:
    """Each row's argmax and its leave-one-out consensus's (k ≥ 2)."""
    own, peer = loo_votes_batch(as_outputs(outputs)[None])
    return own[0].tolist(), peer[0].tolist()


def _widened(t: Tally, classes: int) -> Tally:
    """`t` laid out for `classes` classes (a window that mixes tasks of different widths)."""
    c = (len(t) - 1) // 2
    if c >= classes:
        return t
    pad = [0] * (classes - c)
    return [t[0], *t[1:1 + c], *pad, *t[1 + c:], *pad]


def tally_votes(totals: dict[str, Tally], ids: Sequence[str], votes: Votes,
                classes: int) -> None:
    """Add one query to each participant's tally: did it agree with its peers' consensus,
    which class did it answer, which did the consensus. Python integers: exact in any
    order, and cheap (a few list updates per participant, no numpy call per query)."""
    own, peer = votes
    width = 1 + 2 * classes
    for pid, a, b in zip(ids, own, peer, strict=True):
        t = totals.get(pid)
        if t is None:
            t = totals[pid] = [0] * width
        elif len(t) < width:
            t = totals[pid] = _widened(t, classes)
        c = (len(t) - 1) // 2
        t[0] += a == b
        t[1 + a] += 1
        t[1 + c + b] += 1


def correlated_agreement_add(totals: dict[str, Tally], ids: Sequence[str],
                             outputs: npt.ArrayLike, votes: Votes | None = None) -> None:
    """Tally one query's (k, C) rows (sorted ids); `votes` when already computed in a batch.
    A lone participant has no peers: nothing is tallied, it scores 0."""
    if votes is not None:  # the batch already checked the rows: no second pass over them
        if len(ids) >= 2:
            tally_votes(totals, ids, votes, np.shape(outputs)[1])
        return
    x = as_outputs(outputs)
    if len(x) >= 2:
        tally_votes(totals, ids, loo_votes(x), x.shape[1])


def correlated_agreement_score(tally: Sequence[int]) -> float:
    """Agreements with the peers' consensus minus the agreements expected by chance.

    Multi-task peer prediction (Dasgupta & Ghosh 2013; the identity-matrix case of
    Shnayder et al.'s Correlated Agreement, 2016): with n queries, answer histogram f and
    the consensus's histogram g over those queries, the score is A − f·g / n. An answer
    that carries no information about the query — a random class, a constant, the argmax
    of noise around uniform, a colluders' shared coin — agrees with the consensus only as
    often as the two histograms overlap, so it scores ≈ 0 in expectation, however its
    answers are distributed; an informative one scores its agreement above chance.
    """
    c = (len(tally) - 1) // 2
    f, g = tally[1:1 + c], tally[1 + c:]
    n = sum(f)
    if n == 0:
        return 0.0
    return float(tally[0] - sum(a * b for a, b in zip(f, g, strict=True)) / n)


@dataclass(frozen=True)
class WindowMethod:
    """A label-free method that is not a sum of per-query scores: integer tallies per
    participant, added query by query, and the score of a participant's window tally."""

    add: Callable[[dict[str, Tally], Sequence[str], npt.ArrayLike, Votes | None], None]
    score: Callable[[Sequence[int]], float]


WINDOW_METHODS: Mapping[str, WindowMethod] = {
    "correlated_agreement": WindowMethod(correlated_agreement_add, correlated_agreement_score),
}

#: Every label-free method an aggregator may be configured with.
INCENTIVE_METHODS: frozenset[str] = frozenset(LABEL_FREE_METHODS) | frozenset(WINDOW_METHODS)
#: The aggregator's default: it pays random, constant, uniform and colluding answers ≈ 0
#: (`fi-stream experiment incentives`, README).
DEFAULT_METHOD = "correlated_agreement"


def _sorted_query(ids: Sequence[str], outputs: npt.ArrayLike) -> tuple[list[str], F64]:
    """Rows in participant-id order: the float64 sums then do not depend on arrival order."""
    x = as_outputs(outputs)
    if len(ids) != len(x):
        raise ValueError(f"{len(ids)} participant ids for {len(x)} output rows")
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate participant ids in one query: {sorted(ids)}")
    order = sorted(range(len(ids)), key=lambda j: ids[j])
    return [ids[j] for j in order], x[order]


def window_scores(per_query: Iterable[tuple[Sequence[str], npt.ArrayLike]],
                  method: str) -> dict[str, float]:
    """Score a window of (ids, outputs) pairs: a per-query label-free score summed, or a
    `WINDOW_METHODS` score of the summed tallies.

    A participant absent from a query gets nothing for it; one absent from every query
    is absent from the result (the caller adds zeros for ids it knows about).
    """
    windowed = WINDOW_METHODS.get(method)
    if windowed is not None:
        tallies: dict[str, Tally] = {}
        for ids, outputs in per_query:
            sorted_ids, x = _sorted_query(ids, outputs)
            windowed.add(tallies, sorted_ids, x, None)
        return {pid: windowed.score(t) for pid, t in tallies.items()}
    fn = LABEL_FREE_METHODS.get(method)
    if fn is None:
        raise ConfigError(f"unknown incentive method {method!r}; "
                          f"use one of {', '.join(sorted(INCENTIVE_METHODS))}")
    totals: dict[str, float] = {}
    for ids, outputs in per_query:
        sorted_ids, x = _sorted_query(ids, outputs)
        for pid, score in zip(sorted_ids, fn(x), strict=True):
            totals[pid] = totals.get(pid, 0.0) + float(score)
    return totals


def split_rewards(scores: Mapping[str, float], budget: float) -> dict[str, float]:
    """The budget in proportion to positive scores; nothing for non-positive ones.

    Negative scores earn 0 rather than a debt: a reward is a payment, never a fine.
    """
    if not (budget >= 0 and math.isfinite(budget)):
        raise ValueError(f"budget must be a finite number >= 0, got {budget}")
    ids = sorted(scores)
    raw = np.array([scores[i] for i in ids], dtype=np.float64)
    if not np.isfinite(raw).all():
        raise ValueError("scores contain NaN or Inf")
    positive = np.clip(raw, 0.0, None)
    top = positive.max(initial=0.0)
    if top <= 0:
        return dict.fromkeys(ids, 0.0)
    # Scaling by the largest score first keeps both tiny (subnormal) and huge scores exact
    # enough that the shares sum to 1 within rounding.
    scaled = positive / top
    shares = scaled / scaled.sum()
    return {i: float(budget * s) for i, s in zip(ids, shares, strict=True)}


# -- merit: Shapley values of ensemble accuracy ------------------------------------------------

def ensemble_accuracy_value(outputs_by_query: Sequence[tuple[Sequence[str], npt.ArrayLike]],
                            labels: Sequence[int]) -> Value:
    """v(S): accuracy over the window of the soft vote of coalition S.

    A query none of S answered counts as wrong, so v(∅) = 0 and v is comparable across
    coalitions. Queries with the same participants are stacked and evaluated together,
    and every coalition's value is cached: Shapley calls v up to 2^N times.
    """
    if len(outputs_by_query) != len(labels):
        raise ValueError(f"{len(outputs_by_query)} queries but {len(labels)} labels")
    n_queries = len(labels)
    grouped: dict[tuple[tuple[str, ...], int], tuple[list[F64], list[int]]] = {}
    for (ids, outputs), label in zip(outputs_by_query, labels, strict=True):
        sorted_ids, x = _sorted_query(ids, outputs)
        rows, group_labels = grouped.setdefault((tuple(sorted_ids), x.shape[1]), ([], []))
        rows.append(x)
        group_labels.append(int(label))
    groups = [(ids, np.stack(rows), np.asarray(lab, dtype=np.int64))
              for (ids, _), (rows, lab) in sorted(grouped.items())]
    cache: dict[frozenset[str], float] = {}

    def value(coalition: frozenset[str]) -> float:
        cached = cache.get(coalition)
        if cached is not None:
            return cached
        hits = 0
        for ids, stacked, group_labels in groups:
            mask = np.array([i in coalition for i in ids])
            if mask.any():
                votes = stacked[:, mask, :].mean(axis=1).argmax(axis=1)
                hits += int((votes == group_labels).sum())
        result = hits / n_queries if n_queries else 0.0
        cache[coalition] = result
        return result

    return value


def _checked_ids(participants: Sequence[str]) -> list[str]:
    ids = sorted(participants)
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate participant ids: {ids}")
    return ids


def shapley_exact(participants: Sequence[str], value: Value) -> dict[str, float]:
    """Exact Shapley values: v is called once per coalition (2^N), then combined in float64.

    φ_i = Σ_{S ∌ i} |S|!(N−|S|−1)!/N! · (v(S ∪ {i}) − v(S)).
    """
    ids = _checked_ids(participants)
    n = len(ids)
    if n > MAX_EXACT_SHAPLEY:
        raise ConfigError(f"exact Shapley over {n} participants costs 2^{n} coalitions; "
                          f"use shapley_monte_carlo above {MAX_EXACT_SHAPLEY}")
    if n == 0:
        return {}
    masks = np.arange(1 << n)
    values = np.array([value(frozenset(ids[j] for j in range(n) if m >> j & 1))
                       for m in range(1 << n)], dtype=np.float64)
    sizes = np.array([m.bit_count() for m in range(1 << n)])
    weights = np.array([math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n)
                        for s in range(n)], dtype=np.float64)
    phi: dict[str, float] = {}
    for j, pid in enumerate(ids):
        without = masks[(masks >> j) & 1 == 0]
        gains = values[without | (1 << j)] - values[without]
        phi[pid] = float((weights[sizes[without]] * gains).sum())
    return phi


def shapley_monte_carlo(participants: Sequence[str], value: Value, permutations: int,
                        rng: np.random.Generator) -> tuple[dict[str, float], dict[str, float]]:
    """Permutation-sampling estimates of Shapley values and their standard errors.

    Each permutation gives every participant one unbiased sample of its marginal gain,
    so the standard error is the sample std / √permutations (inf with one permutation).
    """
    if permutations < 1:
        raise ValueError(f"permutations must be >= 1, got {permutations}")
    ids = _checked_ids(participants)
    n = len(ids)
    gains = np.zeros((permutations, n), dtype=np.float64)
    empty = value(frozenset())
    for t in range(permutations):
        coalition: frozenset[str] = frozenset()
        before = empty
        for j in rng.permutation(n):
            coalition = coalition | {ids[j]}
            after = value(coalition)
            gains[t, j] = after - before
            before = after
    means = gains.mean(axis=0)
    errors = (gains.std(axis=0, ddof=1) / math.sqrt(permutations) if permutations > 1
              else np.full(n, math.inf))
    return ({pid: float(means[j]) for j, pid in enumerate(ids)},
            {pid: float(errors[j]) for j, pid in enumerate(ids)})


# -- comparing label-free and merit rewards ------------------------------------------------------

def _shares(values: Mapping[str, float], ids: Sequence[str]) -> F64 | None:
    """Positive parts normalised to sum 1; None when there is no positive mass."""
    v = np.clip(np.array([values.get(i, 0.0) for i in ids], dtype=np.float64), 0.0, None)
    total = v.sum()
    if not total > 0:
        return None
    out: F64 = v / total
    return out


def skill_fairness(merit_shares: Mapping[str, float],
                   reward_shares: Mapping[str, float]) -> float:
    """F = 1 − ½·‖p − r‖₁ over the union of ids (1 = rewards follow merit exactly).

    Both sides are clipped at 0 and renormalised; nan when either has nothing positive,
    because there is then no distribution to compare.
    """
    ids = sorted(set(merit_shares) | set(reward_shares))
    p, r = _shares(merit_shares, ids), _shares(reward_shares, ids)
    if p is None or r is None:
        return math.nan
    return float(1.0 - 0.5 * np.abs(p - r).sum())


def _average_ranks(v: F64) -> F64:
    """Ranks 0..n−1; tied values share the mean of the ranks they span."""
    order = np.argsort(v, kind="stable")
    ordinal = np.empty(len(v), dtype=np.float64)
    ordinal[order] = np.arange(len(v), dtype=np.float64)
    _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
    mean_rank = np.bincount(inverse, weights=ordinal) / counts
    ranks: F64 = mean_rank[inverse]
    return ranks


def spearman(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Spearman's ρ over common ids (average ranks for ties); nan with < 2 ids or no variance."""
    ids = sorted(set(a) & set(b))
    if len(ids) < 2:
        return math.nan
    ra = _average_ranks(np.array([a[i] for i in ids], dtype=np.float64))
    rb = _average_ranks(np.array([b[i] for i in ids], dtype=np.float64))
    da, db = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float((da * da).sum()) * float((db * db).sum()))
    if denom == 0:
        return math.nan
    return float(np.clip((da * db).sum() / denom, -1.0, 1.0))
