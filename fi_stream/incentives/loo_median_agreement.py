"""`loo_median_agreement`: 1 per query where a participant's argmax equals the argmax of
the geometric median of the OTHER participants' rows.

Why: `loo_agreement` compares each participant with the mean of its peers, and a mean
follows any single peer far enough away: one participant sending extreme vectors can
flip the reference of everyone else, so honest answers stop agreeing with it and lose
their pay. The geometric median (`fi_stream.strategies.geometric_median`) of the peers
moves little while the honest peers are a majority, so the reference stays what the
honest ensemble says and an extreme participant only loses its own agreement. Integer
scores: window sums are exact in any order. No batched path: Weiszfeld's iteration runs
a different number of steps per query, so a stack gains little.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fi_stream.aggregation import as_outputs
from fi_stream.incentives.base import F64, PerQuerySum
from fi_stream.incentives.registry import register
from fi_stream.strategies.geometric_median import geometric_median


def loo_median_agreement(outputs: npt.ArrayLike) -> F64:
    """1 where row k's argmax equals that of the geometric median of the other rows."""
    x = as_outputs(outputs)
    k = len(x)
    if k < 2:
        return np.zeros(k)
    others = [geometric_median(np.delete(x, j, axis=0)) for j in range(k)]
    peer = np.array([int(np.argmax(m)) for m in others])
    agree: F64 = (x.argmax(axis=1) == peer).astype(np.float64)
    return agree


@register("loo_median_agreement")
class LooMedianAgreement(PerQuerySum):
    def score(self, outputs: F64) -> F64:
        return loo_median_agreement(outputs)
