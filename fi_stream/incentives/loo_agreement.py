"""`loo_agreement`: 1 per query where a participant's argmax equals that of the others'
consensus. Integer-valued, so its batched path (`add_batch`) sums exactly."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from fi_stream.aggregation import as_outputs
from fi_stream.incentives.base import F64, PerQuerySum, loo_consensus, loo_votes_batch
from fi_stream.incentives.registry import register


def loo_agreement(outputs: npt.ArrayLike) -> F64:
    """1 where a participant's argmax equals that of the others' consensus, else 0."""
    x = as_outputs(outputs)
    if len(x) < 2:
        return np.zeros(len(x))
    agree: F64 = (x.argmax(axis=1) == loo_consensus(x).argmax(axis=1)).astype(np.float64)
    return agree


def loo_agreement_batch(x: F64) -> F64:
    """`loo_agreement(x[i])` for every i of a (Q, k, C) stack."""
    q, k, _ = x.shape
    if k < 2:
        return np.zeros((q, k))
    own, peer = loo_votes_batch(x)
    agree: F64 = (own == peer).astype(np.float64)
    return agree


@register("loo_agreement")
class LooAgreement(PerQuerySum):
    def score(self, outputs: F64) -> F64:
        return loo_agreement(outputs)

    def add_batch(self, x: F64) -> Sequence[Any]:
        rows: list[Any] = loo_agreement_batch(x).tolist()
        return rows
