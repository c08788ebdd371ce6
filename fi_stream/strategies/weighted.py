"""`weighted`: the mean with explicit non-negative weights per participant."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from fi_stream.strategies.base import F64, as_outputs, weighted_mean
from fi_stream.strategies.registry import register


def weighted(outputs: npt.ArrayLike, weights: npt.ArrayLike | None = None) -> F64:
    """Mean with explicit non-negative weights per row (e.g. running rewards).

    Without weights, or with all of them zero, this is the soft vote: a new window with
    no history yet must still produce a result.
    """
    x = as_outputs(outputs)
    if weights is None:
        return weighted_mean(x, np.ones(len(x)))
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(x),) or not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"weights must be {len(x)} finite numbers >= 0, got {w!r}")
    return weighted_mean(x, w)


@register("weighted")
class Weighted:
    """The weights come with the call (`aggregate(x, "weighted", weights=...)`); the
    aggregator has none to give, so there it is the plain mean."""

    takes_weights: ClassVar[bool] = True

    def aggregate(self, outputs: F64, **params: Any) -> F64:
        return weighted(outputs, **params)
