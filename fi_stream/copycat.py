"""Copycat detection: answers of one query that are closer than independent noise allows.

An honest participant sends x = clip(p) + n with n ~ N(0, s²·I) over the row's d
coordinates (s = σ·C, its registered noise std), drawn from its own secret generator.
For two honest rows of one query the difference is (c_a − c_b) + N(0, (s_a² + s_b²)·I),
so ‖x_a − x_b‖² / (s_a² + s_b²) is non-central χ²_d with non-centrality
‖c_a − c_b‖²/(s_a² + s_b²) ≥ 0 — and a non-central χ² is stochastically LARGER than the
central one. Whatever the two models say,

    P(‖x_a − x_b‖² < q · (s_a² + s_b²)) ≤ F_{χ²_d}(q).

`chi2_lower_bound` picks q with F_{χ²_d}(q) ≤ p from γ(a, x) ≤ x^a / a (drop e^{−t} under
the integral): F_{χ²_d}(q) ≤ (q/2)^{d/2} / Γ(d/2 + 1). At p = 1e-9 and d = 10 that is
q = 0.0826: two honest rows closer than 0.41·s·√2 occur less than once per 10⁹ pairs. A
re-sent copy is at distance 0; to slip through, a copycat must add noise of its own, of
std about 0.13·s per coordinate (d = 10) or more — the limit of a per-query test (a
window-level test of the summed distances would catch far smaller perturbations).

Rows are taken in log order (fi.responses offset, then row): a flagged row is the LATER
of the pair, since a copy can only be written after the answer it copies was read. With
no noise at all (s_a = s_b = 0) nothing is flagged: equal deterministic models may send
equal rows. Pure and deterministic, so the auditor recomputes every flag.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fi_stream.join import Answer, OpenQuery

#: Upper bound on the chance that two independently noised honest rows are flagged.
FALSE_FLAG_RATE = 1e-9

F64 = npt.NDArray[np.float64]


def chi2_lower_bound(width: int, p: float = FALSE_FLAG_RATE) -> float:
    """q > 0 with P(χ²_width < q) ≤ p: q = 2·(p·Γ(width/2 + 1))^{2/width}.

    Closed form (no iterative quantile search), so the aggregator and the auditor get the
    same float from the same libm; slightly below the exact quantile, never above it.
    """
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    half = width / 2
    return 2.0 * math.exp((math.log(p) + math.lgamma(half + 1.0)) / half)


@dataclass(frozen=True, slots=True)
class Copy:
    """Row `index` (a flagged copy) is within the noise of row `of` (kept, earlier)."""

    index: int
    of: int
    distance2: float
    threshold2: float


def pair_thresholds(stds: npt.ArrayLike, width: int, p: float = FALSE_FLAG_RATE) -> F64:
    """(k, k) squared-distance thresholds q·(s_a² + s_b²) for rows with noise stds `stds`."""
    s = np.asarray(stds, dtype=np.float64)
    if s.ndim != 1 or not np.isfinite(s).all() or (s < 0).any():
        raise ValueError(f"noise stds must be finite numbers >= 0, got {s!r}")
    var = s * s
    out: F64 = (var[:, None] + var[None, :]) * chi2_lower_bound(width, p)
    return out


def squared_distances(rows: npt.ArrayLike) -> F64:
    """(k, k) squared L2 distances between the rows of a (k, d) float64 matrix."""
    x = np.asarray(rows, dtype=np.float64)
    diff = x[:, None, :] - x[None, :, :]
    out: F64 = (diff * diff).sum(axis=2)
    return out


def flag_copies(rows: npt.ArrayLike, stds: Sequence[float],
                positions: Sequence[tuple[int, int]], *,
                p: float = FALSE_FLAG_RATE) -> list[Copy]:
    """The copies among one query's rows (one per participant), in log order.

    `positions[i]` orders row i in the log ((offset, row) in fi.responses). Each row, in
    that order, is compared with the rows kept so far (a copy of a copy is compared with
    the original); it is flagged when it is closer than its pair's threshold to one of them
    (the nearest is named), else kept.
    """
    x = np.asarray(rows, dtype=np.float64)
    k = len(x)
    if x.ndim != 2 or len(stds) != k or len(positions) != k:
        raise ValueError(f"need (k, d) rows with k stds and k positions; got {x.shape}, "
                         f"{len(stds)} stds, {len(positions)} positions")
    if k < 2:
        return []
    d2 = squared_distances(x)
    t2 = pair_thresholds(stds, x.shape[1], p)
    close = d2 < t2
    np.fill_diagonal(close, False)
    if not close.any():  # the honest case, nearly always: one vector comparison
        return []
    kept: list[int] = []
    copies: list[Copy] = []
    for j in sorted(range(k), key=lambda i: positions[i]):
        near = [i for i in kept if close[i, j]]
        if near:
            i = min(near, key=lambda m: (d2[m, j], positions[m]))
            copies.append(Copy(j, i, float(d2[i, j]), float(t2[i, j])))
        else:
            kept.append(j)
    return copies


def suspicious(x: np.ndarray[Any, Any], stds: npt.ArrayLike,
               p: float = FALSE_FLAG_RATE) -> npt.NDArray[np.bool_]:
    """For a (Q, k, d) stack of queries: which have a pair of rows within the noise (those,
    and only those, need `flag_copies`). `stds`: (k,) for the same participants in every
    query, or (Q, k)."""
    q, k, d = x.shape
    if k < 2:
        return np.zeros(q, dtype=np.bool_)
    s = np.asarray(stds, dtype=np.float64)
    if s.shape not in ((k,), (q, k)) or not np.isfinite(s).all() or (s < 0).any():
        raise ValueError(f"noise stds must be finite numbers >= 0 of shape ({k},) or "
                         f"({q}, {k}), got {s.shape}")
    var = np.broadcast_to(s * s, (q, k))
    t2 = (var[:, :, None] + var[:, None, :]) * chi2_lower_bound(d, p)
    diff = x[:, :, None, :] - x[:, None, :, :]
    d2 = (diff * diff).sum(axis=3)
    close = d2 < t2
    close[:, np.arange(k), np.arange(k)] = False
    out: npt.NDArray[np.bool_] = close.any(axis=(1, 2))
    return out


def screen_copies(oq: OpenQuery, noise_std: Callable[[str], float],
                  p: float = FALSE_FLAG_RATE) -> list[tuple[Answer, str]]:
    """Take the copies out of a joined query's answers: (the copy, whose answer it copies).

    The aggregator calls this once per query, just before its result is built; the rows
    left in `oq.answers` are the ones the result includes and the incentives score.
    """
    if len(oq.answers) < 2:
        return []
    ids = sorted(oq.answers)
    answers = [oq.answers[i] for i in ids]
    rows = np.stack([a.vector for a in answers]).astype(np.float64)
    if not np.isfinite(rows).all():
        return []  # `aggregate` names the problem; there is no distance to speak of
    copies = flag_copies(rows, [noise_std(i) for i in ids],
                         [(a.offset, a.index) for a in answers], p=p)
    out = []
    for c in copies:
        out.append((answers[c.index], ids[c.of]))
        del oq.answers[ids[c.index]]
    return out
