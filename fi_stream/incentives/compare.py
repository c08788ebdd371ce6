"""Measures that compare label-free rewards with merit (skill fairness, Spearman's ρ)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from fi_stream.incentives.base import F64


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
