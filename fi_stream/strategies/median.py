"""`median`: the coordinate-wise median, which a minority of arbitrary vectors cannot move far."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from fi_stream.strategies.base import F64, as_outputs
from fi_stream.strategies.registry import register


def median(outputs: npt.ArrayLike) -> F64:
    """Coordinate-wise median: a minority of arbitrary vectors cannot move it far."""
    med: F64 = np.median(as_outputs(outputs), axis=0)
    return med


@register("median")
class Median:
    takes_weights: ClassVar[bool] = False

    def aggregate(self, outputs: F64, **params: Any) -> F64:
        return median(outputs, **params)
