"""`loo_confidence_effect`: how much a participant raises the soft vote's confidence."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fi_stream.aggregation import as_outputs, to_simplex
from fi_stream.incentives.base import F64, PerQuerySum, loo_consensus
from fi_stream.incentives.registry import register


def loo_confidence_effect(outputs: npt.ArrayLike) -> F64:
    """How much k raises the soft vote's confidence in the answer it gives.

    Both ensembles (with and without k) are projected with `to_simplex` and read at
    the FULL ensemble's prediction, so a participant that tips the decision is credited
    for it rather than compared with a different class.
    """
    x = as_outputs(outputs)
    if len(x) < 2:
        return np.zeros(len(x))
    full = to_simplex(x.mean(axis=0))
    prediction = int(full.argmax())
    effect: F64 = full[prediction] - to_simplex(loo_consensus(x))[:, prediction]
    return effect


@register("loo_confidence_effect")
class LooConfidenceEffect(PerQuerySum):
    def score(self, outputs: F64) -> F64:
        return loo_confidence_effect(outputs)
