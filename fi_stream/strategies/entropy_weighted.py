"""`entropy_weighted`: a confident participant counts more than a hesitant one."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from fi_stream.strategies.base import F64, as_outputs, entropy, to_simplex, weighted_mean
from fi_stream.strategies.registry import register


def entropy_weighted(outputs: npt.ArrayLike) -> F64:
    """Weights exp(−H(p_k)): a confident participant counts more than a hesitant one."""
    x = as_outputs(outputs)
    return weighted_mean(x, np.exp(-entropy(to_simplex(x))))


@register("entropy_weighted")
class EntropyWeighted:
    takes_weights: ClassVar[bool] = False

    def aggregate(self, outputs: F64, **params: Any) -> F64:
        return entropy_weighted(outputs, **params)
