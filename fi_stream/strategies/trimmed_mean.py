"""`trimmed_mean`: the coordinate-wise mean after dropping a share at each end."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from fi_stream.strategies.base import F64, as_outputs
from fi_stream.strategies.registry import register


def trimmed_mean(outputs: npt.ArrayLike, trim: float = 0.2) -> F64:
    """Coordinate-wise mean after dropping the `trim` share at each end (keeps ≥ 1 row)."""
    if not 0 <= trim < 0.5:
        raise ValueError(f"trim must be in [0, 0.5), got {trim}")
    x = np.sort(as_outputs(outputs), axis=0)
    k = len(x)
    cut = min(int(np.floor(trim * k)), (k - 1) // 2)
    mean: F64 = x[cut:k - cut].mean(axis=0)
    return mean


@register("trimmed_mean")
class TrimmedMean:
    takes_weights: ClassVar[bool] = False

    def aggregate(self, outputs: F64, **params: Any) -> F64:
        return trimmed_mean(outputs, **params)
