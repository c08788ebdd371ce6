"""`equal_split`: 1/k each per query, the baseline every other method should beat."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fi_stream.aggregation import as_outputs
from fi_stream.incentives.base import F64, PerQuerySum
from fi_stream.incentives.registry import register


def equal_split(outputs: npt.ArrayLike) -> F64:
    """1/k each: the baseline every other method should beat."""
    k = len(as_outputs(outputs))
    return np.full(k, 1.0 / k)


@register("equal_split")
class EqualSplit(PerQuerySum):
    def score(self, outputs: F64) -> F64:
        return equal_split(outputs)
