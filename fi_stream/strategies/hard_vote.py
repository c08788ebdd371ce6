"""`hard_vote`: each participant votes for its argmax; the vector is the vote shares."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from fi_stream.strategies.base import F64, as_outputs
from fi_stream.strategies.registry import register


def hard_vote(outputs: npt.ArrayLike) -> F64:
    """Share of participants whose argmax is each class (ties go to the lower class)."""
    x = as_outputs(outputs)
    votes = np.bincount(x.argmax(axis=1), minlength=x.shape[1]).astype(np.float64)
    share: F64 = votes / len(x)
    return share


@register("hard_vote")
class HardVote:
    takes_weights: ClassVar[bool] = False

    def aggregate(self, outputs: F64, **params: Any) -> F64:
        return hard_vote(outputs, **params)
