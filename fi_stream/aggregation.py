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
Strategy = Callable[..., F64]


def as_outputs(outputs: npt.ArrayLike) -> F64:
    """A float64 (k ≥ 1, C ≥ 1) array of finite values, or ValueError naming the problem."""
    x = np.asarray(outputs, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"outputs must be a non-empty (participants, classes) array, "
                         f"got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("outputs contain NaN or Inf; such answers belong in the DLQ")
    return x


def to_simplex(v: npt.ArrayLike) -> F64:
    """Clamp at zero and renormalise (row-wise for 2-D); all-zero rows become uniform."""
    a = np.clip(np.asarray(v, dtype=np.float64), 0.0, None)
    total = a.sum(axis=-1, keepdims=True)
    uniform = np.full_like(a, 1.0 / a.shape[-1])
    out: F64 = np.where(total > 0, a / np.where(total > 0, total, 1.0), uniform)
    return out


def entropy(p: F64) -> F64:
    """Shannon entropy (nats) of each row of a row-stochastic matrix (0·log 0 = 0)."""
    logs = np.log(np.where(p > 0, p, 1.0))
    h: F64 = -(p * logs).sum(axis=-1)
    return h


def _weighted_mean(x: F64, weights: F64) -> F64:
    """Σ w_k x_k / Σ w_k; all-zero weights fall back to the plain mean."""
    w = weights if weights.sum() > 0 else np.ones(len(x))
    mean: F64 = (w[:, None] * x).sum(axis=0) / w.sum()
    return mean


def soft_vote(outputs: npt.ArrayLike) -> F64:
    """Mean of the vectors: unbiased under independent zero-mean noise."""
    mean: F64 = as_outputs(outputs).mean(axis=0)
    return mean


def hard_vote(outputs: npt.ArrayLike) -> F64:
    """Share of participants whose argmax is each class (ties go to the lower class)."""
    x = as_outputs(outputs)
    votes = np.bincount(x.argmax(axis=1), minlength=x.shape[1]).astype(np.float64)
    share: F64 = votes / len(x)
    return share


def entropy_weighted(outputs: npt.ArrayLike) -> F64:
    """Weights exp(−H(p_k)): a confident participant counts more than a hesitant one."""
    x = as_outputs(outputs)
    return _weighted_mean(x, np.exp(-entropy(to_simplex(x))))


def js_consensus(outputs: npt.ArrayLike, beta: float = 5.0) -> F64:
    """Weights exp(−β·JS(p_k ‖ mean)): participants far from the consensus count less."""
    if not beta >= 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    x = as_outputs(outputs)
    p = to_simplex(x)
    m = np.broadcast_to(p.mean(axis=0), p.shape)
    js = entropy(0.5 * (p + m)) - 0.5 * (entropy(p) + entropy(m))
    # JS ≥ 0 in exact arithmetic; rounding can leave −1e-17.
    return _weighted_mean(x, np.exp(-beta * np.clip(js, 0.0, None)))


def median(outputs: npt.ArrayLike) -> F64:
    """Coordinate-wise median: a minority of arbitrary vectors cannot move it far."""
    med: F64 = np.median(as_outputs(outputs), axis=0)
    return med


def trimmed_mean(outputs: npt.ArrayLike, trim: float = 0.2) -> F64:
    """Coordinate-wise mean after dropping the `trim` share at each end (keeps ≥ 1 row)."""
    if not 0 <= trim < 0.5:
        raise ValueError(f"trim must be in [0, 0.5), got {trim}")
    x = np.sort(as_outputs(outputs), axis=0)
    k = len(x)
    cut = min(int(np.floor(trim * k)), (k - 1) // 2)
    mean: F64 = x[cut:k - cut].mean(axis=0)
    return mean


def weighted(outputs: npt.ArrayLike, weights: npt.ArrayLike | None = None) -> F64:
    """Mean with explicit non-negative weights per row (e.g. running rewards).

    Without weights, or with all of them zero, this is the soft vote: a new window with
    no history yet must still produce a result.
    """
    x = as_outputs(outputs)
    if weights is None:
        return _weighted_mean(x, np.ones(len(x)))
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(x),) or not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"weights must be {len(x)} finite numbers >= 0, got {w!r}")
    return _weighted_mean(x, w)


def spectral_weights(confidences: npt.ArrayLike) -> F64:
    """|top eigenvector| of the covariance of participants' max-confidence scores.

    `confidences` is (n_queries, k) over a window. Participants whose confidence moves
    with the common factor get weight; the result sums to 1. It is uniform when the
    eigenvector is undefined (fewer than 2 queries, no variance) or not unique (a tied
    top eigenvalue), so the answer never depends on the LAPACK build.
    """
    c = np.asarray(confidences, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] == 0:
        raise ValueError(f"confidences must be (queries, participants), got {c.shape}")
    if not np.isfinite(c).all():
        raise ValueError("confidences contain NaN or Inf")
    k = c.shape[1]
    uniform = np.full(k, 1.0 / k)
    if c.shape[0] < 2:
        return uniform
    vals, vecs = np.linalg.eigh(np.cov(c, rowvar=False).reshape(k, k))
    top = vals[-1]
    if top <= 1e-12 * max(1.0, float(np.abs(c).max()) ** 2):
        return uniform
    if k > 1 and top - vals[-2] <= 1e-9 * top:
        return uniform
    v = np.abs(vecs[:, -1])
    w: F64 = v / v.sum()
    return w


STRATEGIES: Mapping[str, Strategy] = {
    "soft_vote": soft_vote,
    "hard_vote": hard_vote,
    "entropy_weighted": entropy_weighted,
    "js_consensus": js_consensus,
    "median": median,
    "trimmed_mean": trimmed_mean,
    "weighted": weighted,
    # The aggregator supplies the weights of these two from its window history and records
    # them in each Result, so the auditor recomputes them like any other rule.
    "reward_weighted": weighted,
    "spectral": weighted,
}

#: Strategies that need per-participant weights.
WEIGHTED_STRATEGIES = frozenset({"weighted", "reward_weighted", "spectral"})


@dataclass(frozen=True)
class Aggregate:
    vector: F64
    prediction: int
    confidence: float


def aggregate(outputs: npt.ArrayLike, strategy: str = "soft_vote", **params: Any) -> Aggregate:
    """Apply `strategy`; prediction is the argmax, confidence its share after projection."""
    fn = STRATEGIES.get(strategy)
    if fn is None:
        raise ConfigError(f"unknown aggregation strategy {strategy!r}; "
                          f"use one of {', '.join(sorted(STRATEGIES))}")
    vector = fn(as_outputs(outputs), **params)
    prediction = int(np.argmax(vector))
    return Aggregate(vector, prediction, float(to_simplex(vector)[prediction]))


def soft_vote_batch(x: F64) -> tuple[F64, npt.NDArray[np.intp], F64]:
    """`aggregate(x[i], "soft_vote")` for every i of a (Q, k, C) stack, in one pass.

    The same ufuncs over the same axes (rows summed in order, the simplex sum over C per
    row), so it agrees bit for bit on the builds we test; callers check a sample against
    `aggregate` itself before relying on it (`fi_stream.results.batch_matches`).
    """
    vector: F64 = x.mean(axis=1)
    prediction = vector.argmax(axis=1)
    confidence: F64 = to_simplex(vector)[np.arange(len(x)), prediction]
    return vector, prediction, confidence
