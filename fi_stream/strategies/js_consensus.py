"""`js_consensus`: participants far from the consensus (Jensen-Shannon) count less."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from fi_stream.strategies.base import F64, as_outputs, entropy, to_simplex, weighted_mean
from fi_stream.strategies.registry import register


def js_consensus(outputs: npt.ArrayLike, beta: float = 5.0) -> F64:
    """Weights exp(−β·JS(p_k ‖ mean)): participants far from the consensus count less."""
    if not beta >= 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    x = as_outputs(outputs)
    p = to_simplex(x)
    m = np.broadcast_to(p.mean(axis=0), p.shape)
    js = entropy(0.5 * (p + m)) - 0.5 * (entropy(p) + entropy(m))
    # JS ≥ 0 in exact arithmetic; rounding can leave −1e-17.
    return weighted_mean(x, np.exp(-beta * np.clip(js, 0.0, None)))


@register("js_consensus")
class JsConsensus:
    takes_weights: ClassVar[bool] = False

    def aggregate(self, outputs: F64, **params: Any) -> F64:
        return js_consensus(outputs, **params)
