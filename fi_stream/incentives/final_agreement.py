"""`final_agreement`: each query's unit of reward, split among those who said what the
ensemble said."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fi_stream.aggregation import as_outputs
from fi_stream.incentives.base import F64, PerQuerySum
from fi_stream.incentives.registry import register


def final_agreement(outputs: npt.ArrayLike) -> F64:
    """Each query's unit of reward, split equally among those who said what the ensemble said."""
    x = as_outputs(outputs)
    match = (x.argmax(axis=1) == x.mean(axis=0).argmax()).astype(np.float64)
    total = match.sum()
    share: F64 = match / total if total > 0 else np.zeros(len(x))
    return share


@register("final_agreement")
class FinalAgreement(PerQuerySum):
    def score(self, outputs: F64) -> F64:
        return final_agreement(outputs)
