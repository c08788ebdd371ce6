"""`soft_vote`: the mean of the vectors, unbiased under independent zero-mean noise."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from fi_stream.strategies.base import F64, as_outputs, to_simplex
from fi_stream.strategies.registry import register


def soft_vote(outputs: npt.ArrayLike) -> F64:
    """Mean of the vectors: unbiased under independent zero-mean noise."""
    mean: F64 = as_outputs(outputs).mean(axis=0)
    return mean


def soft_vote_batch(x: F64) -> tuple[F64, npt.NDArray[np.intp], F64]:
    """`aggregate(x[i], "soft_vote")` for every i of a (Q, k, C) stack, in one pass.

    The same ufuncs over the same axes (rows summed in order, the simplex sum over C per
    row), so it agrees bit for bit on the builds we test; callers check a sample against
    `aggregate` itself before relying on it (`fi_stream.batched.stack_matches`).
    """
    vector: F64 = x.mean(axis=1)
    prediction = vector.argmax(axis=1)
    confidence: F64 = to_simplex(vector)[np.arange(len(x)), prediction]
    return vector, prediction, confidence


@register("soft_vote")
class SoftVote:
    takes_weights: ClassVar[bool] = False

    def aggregate(self, outputs: F64, **params: Any) -> F64:
        return soft_vote(outputs, **params)
