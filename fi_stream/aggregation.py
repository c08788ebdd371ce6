"""Aggregation strategies: pure, deterministic functions of the included outputs.

`outputs` is a (k, C) array, one noised output vector per participant, rows sorted by
participant id by the caller; everything accumulates in float64 so the auditor can
recompute a result bit for bit. Noised vectors may be negative or not sum to one: the
rules that need probabilities first project them with `to_simplex`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fi_stream.errors import ConfigError

F64 = npt.NDArray[np.float64]


def to_simplex(v: npt.ArrayLike) -> F64:
    """Clamp at zero and renormalise (row-wise for 2-D); all-zero rows become uniform."""
    a = np.clip(np.asarray(v, dtype=np.float64), 0.0, None)
    total = a.sum(axis=-1, keepdims=True)
    uniform = np.full_like(a, 1.0 / a.shape[-1])
    safe = np.where(total > 0, total, 1.0)
    out: F64 = np.where(total > 0, a / safe, uniform)
    return out


def _entropy(p: F64) -> F64:
    """Shannon entropy (nats) of each row of a row-stochastic matrix."""
    logs = np.log(np.where(p > 0, p, 1.0))
    h: F64 = -(p * logs).sum(axis=-1)
    return h


def _weighted_mean(outputs: F64, weights: F64) -> F64:
    w = np.asarray(weights, dtype=np.float64)
    if not np.isfinite(w).all() or w.sum() <= 0:
        w = np.ones(len(outputs))
    mean: F64 = (w[:, None] * outputs).sum(axis=0) / w.sum()
    return mean


def soft_vote(outputs: F64) -> F64:
    """Mean of the vectors: the unbiased ensemble under independent noise."""
    mean: F64 = np.asarray(outputs, dtype=np.float64).mean(axis=0)
    return mean


def hard_vote(outputs: F64) -> F64:
    """Share of participants whose argmax is each class (majority vote)."""
    x = np.asarray(outputs, dtype=np.float64)
    votes = np.bincount(x.argmax(axis=1), minlength=x.shape[1]).astype(np.float64)
    share: F64 = votes / len(x)
    return share


def entropy_weighted(outputs: F64) -> F64:
    """Soft vote weighted per query by exp(−H(p_k)): confident participants count more."""
    x = np.asarray(outputs, dtype=np.float64)
    return _weighted_mean(x, np.exp(-_entropy(to_simplex(x))))


def js_consensus(outputs: F64, beta: float = 5.0) -> F64:
    """Weights exp(−β·JS(p_k ‖ mean)): participants far from the consensus count less."""
    x = np.asarray(outputs, dtype=np.float64)
    p = to_simplex(x)
    m = p.mean(axis=0, keepdims=True)
    mid = 0.5 * (p + m)
    js = _entropy(mid) - 0.5 * (_entropy(p) + _entropy(np.broadcast_to(m, p.shape)))
    return _weighted_mean(x, np.exp(-beta * np.clip(js, 0.0, None)))


def median(outputs: F64) -> F64:
    """Coordinate-wise median: robust to a minority of arbitrary vectors."""
    med: F64 = np.median(np.asarray(outputs, dtype=np.float64), axis=0)
    return med


def trimmed_mean(outputs: F64, trim: float = 0.2) -> F64:
    """Coordinate-wise mean after dropping the `trim` share at each end (keeps ≥ 1)."""
    x = np.sort(np.asarray(outputs, dtype=np.float64), axis=0)
    k = len(x)
    cut = min(int(np.floor(trim * k)), (k - 1) // 2)
    mean: F64 = x[cut:k - cut].mean(axis=0)
    return mean


def weighted(outputs: F64, weights: npt.ArrayLike | None = None) -> F64:
    """Soft vote with explicit non-negative weights (e.g. running rewards)."""
    x = np.asarray(outputs, dtype=np.float64)
    w = np.ones(len(x)) if weights is None else np.clip(np.asarray(weights, np.float64), 0, None)
    return _weighted_mean(x, w)


def spectral_weights(confidences: npt.ArrayLike) -> F64:
    """Global weights from a window: |top eigenvector| of the covariance of participants'
    max-confidence scores (n_queries × k), normalised to sum 1; uniform when degenerate."""
    c = np.asarray(confidences, dtype=np.float64)
    k = c.shape[1]
    if c.shape[0] < 2:
        return np.full(k, 1.0 / k)
    _, vecs = np.linalg.eigh(np.cov(c, rowvar=False).reshape(k, k))
    top = np.abs(vecs[:, -1])
    if not np.isfinite(top).all() or top.sum() <= 0:
        return np.full(k, 1.0 / k)
    w: F64 = top / top.sum()
    return w


STRATEGIES: Mapping[str, Callable[..., F64]] = {
    "soft_vote": soft_vote,
    "hard_vote": hard_vote,
    "entropy_weighted": entropy_weighted,
    "js_consensus": js_consensus,
    "median": median,
    "trimmed_mean": trimmed_mean,
    "weighted": weighted,
}


@dataclass(frozen=True)
class Aggregate:
    vector: F64
    prediction: int
    confidence: float


def aggregate(outputs: npt.ArrayLike, strategy: str = "soft_vote", **params: Any) -> Aggregate:
    """Apply `strategy`; prediction is the argmax, confidence its share after projection."""
    fn = STRATEGIES.get(strategy)
    if fn is None:
        raise ConfigError(f"unknown strategy {strategy!r}; known: {sorted(STRATEGIES)}")
    x = np.asarray(outputs, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"outputs must be a non-empty (k, classes) array, got {x.shape}")
    vector = fn(x, **params)
    prediction = int(np.argmax(vector))
    return Aggregate(vector, prediction, float(to_simplex(vector)[prediction]))
