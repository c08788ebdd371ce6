"""`shapley`: merit-based scores, the Shapley values of ensemble accuracy over a window's
labelled queries (exact up to `MAX_EXACT_SHAPLEY` participants, Monte Carlo above)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from fi_stream.errors import ConfigError
from fi_stream.incentives.base import F64, sorted_query
from fi_stream.incentives.registry import register_labeled

Value = Callable[[frozenset[str]], float]

#: Exact Shapley enumerates 2^N coalitions; above this use shapley_monte_carlo.
MAX_EXACT_SHAPLEY = 12
#: Permutations of the Monte Carlo estimate above `MAX_EXACT_SHAPLEY` participants.
PERMUTATIONS = 2000


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
        sorted_ids, x = sorted_query(ids, outputs)
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


@register_labeled("shapley")
class Shapley:
    def scores(self, participants: Sequence[str],
               queries: Sequence[tuple[Sequence[str], npt.ArrayLike]], labels: Sequence[int],
               seed: Sequence[int], samples: int = PERMUTATIONS
               ) -> tuple[dict[str, float], dict[str, float]]:
        """Exact up to `MAX_EXACT_SHAPLEY` participants (no error), else `samples`
        permutations seeded with `seed` (and their standard errors)."""
        value = ensemble_accuracy_value(queries, labels)
        if len(participants) <= MAX_EXACT_SHAPLEY:
            return shapley_exact(participants, value), {}
        rng = np.random.default_rng(list(seed))
        return shapley_monte_carlo(participants, value, samples, rng)
