"""`spectral`: each participant weighted by how much its confidence moves with the common
factor over the last closed window of this aggregator partition (the spectral weights,
kept here, resumed from the commit metadata under "spectral")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from fi_stream.strategies.base import F64, to_simplex
from fi_stream.strategies.registry import register
from fi_stream.strategies.weighted import Weighted


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


def window_spectral_weights(window: Sequence[tuple[Sequence[str], F64]]
                            ) -> dict[str, float] | None:
    """Spectral weights over the participants present in every result of a window
    ((sorted ids, rows) per result); None with fewer than 2 results or common ids."""
    if len(window) < 2:
        return None
    common = sorted(set.intersection(*(set(ids) for ids, _ in window)))
    if len(common) < 2:
        return None
    matrix = []
    for ids, rows in window:
        # Row-wise maths: projecting only the common rows gives the same numbers.
        position = {p: j for j, p in enumerate(ids)}
        matrix.append(to_simplex(rows[[position[p] for p in common]]).max(axis=1))
    return dict(zip(common, spectral_weights(np.array(matrix)).tolist(), strict=True))


class LastWindowSpectrum:
    """The weights of the last closed window that had them, and the current window's rows
    (memory only: a window resumed after a restart starts its rows afresh)."""

    def __init__(self, last: dict[str, float] | None) -> None:
        self.last = last
        self.rows: list[tuple[Sequence[str], F64]] = []

    def weights(self) -> Mapping[str, float] | None:
        return self.last

    def observe(self, ids: Sequence[str], outputs: F64) -> None:
        self.rows.append((ids, outputs))

    def close_window(self, rewards: Mapping[str, float]) -> None:
        weights = window_spectral_weights(self.rows)
        if weights is not None:
            self.last = weights
        self.rows = []

    def to_state(self) -> Any:
        return self.last


@register("spectral")
class Spectral(Weighted):
    state_key: ClassVar[str] = "spectral"

    def from_state(self, saved: Any) -> LastWindowSpectrum:
        return LastWindowSpectrum(dict(saved) if saved else None)
