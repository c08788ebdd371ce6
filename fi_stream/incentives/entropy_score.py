"""`entropy_score`: confident participants earn more (exp(−H) shares per query)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fi_stream.aggregation import as_outputs, entropy, to_simplex
from fi_stream.incentives.base import F64, PerQuerySum
from fi_stream.incentives.registry import register


def entropy_score(outputs: npt.ArrayLike) -> F64:
    """exp(−H(p_k)) normalised to sum 1 per query: confident participants earn more."""
    w = np.exp(-entropy(to_simplex(as_outputs(outputs))))
    share: F64 = w / w.sum()
    return share


@register("entropy_score")
class EntropyScore(PerQuerySum):
    def score(self, outputs: F64) -> F64:
        return entropy_score(outputs)
