"""`loo_cosine`: cosine similarity of a participant's vector with the others' consensus."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fi_stream.aggregation import as_outputs
from fi_stream.incentives.base import F64, PerQuerySum, loo_consensus
from fi_stream.incentives.registry import register


def loo_cosine(outputs: npt.ArrayLike) -> F64:
    """Cosine similarity with the others' consensus; 0 when either vector is zero."""
    x = as_outputs(outputs)
    if len(x) < 2:
        return np.zeros(len(x))
    c = loo_consensus(x)
    norms = np.linalg.norm(x, axis=1) * np.linalg.norm(c, axis=1)
    dots = (x * c).sum(axis=1)
    cos: F64 = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)
    return cos


@register("loo_cosine")
class LooCosine(PerQuerySum):
    def score(self, outputs: F64) -> F64:
        return loo_cosine(outputs)
