"""`correlated_agreement`: multi-task peer prediction over the window (the default).

Not a sum of per-query scores: each participant's window keeps integer tallies, added
query by query, and the score is computed from the summed tallies at the close.
Integers, so the batched path and a restart through the commit metadata are exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from fi_stream.aggregation import as_outputs
from fi_stream.incentives.base import F64, State, loo_votes, loo_votes_batch
from fi_stream.incentives.registry import register

#: A participant's window tally: [agreements, its answer histogram (C), the consensus's (C)].
Tally = list[int]
Votes = tuple[Sequence[int], Sequence[int]]


def _widened(t: Tally, classes: int) -> Tally:
    """`t` laid out for `classes` classes (a window that mixes tasks of different widths)."""
    c = (len(t) - 1) // 2
    if c >= classes:
        return t
    pad = [0] * (classes - c)
    return [t[0], *t[1:1 + c], *pad, *t[1 + c:], *pad]


def tally_votes(totals: dict[str, Tally], ids: Sequence[str], votes: Votes,
                classes: int) -> None:
    """Add one query to each participant's tally: did it agree with its peers' consensus,
    which class did it answer, which did the consensus. Python integers: exact in any
    order, and cheap (a few list updates per participant, no numpy call per query)."""
    own, peer = votes
    width = 1 + 2 * classes
    for pid, a, b in zip(ids, own, peer, strict=True):
        t = totals.get(pid)
        if t is None:
            t = totals[pid] = [0] * width
        elif len(t) < width:
            t = totals[pid] = _widened(t, classes)
        c = (len(t) - 1) // 2
        t[0] += a == b
        t[1 + a] += 1
        t[1 + c + b] += 1


def correlated_agreement_add(totals: dict[str, Tally], ids: Sequence[str],
                             outputs: npt.ArrayLike, votes: Votes | None = None) -> None:
    """Tally one query's (k, C) rows (sorted ids); `votes` when already computed in a batch.
    A lone participant has no peers: nothing is tallied, it scores 0."""
    if votes is not None:  # the batch already checked the rows: no second pass over them
        if len(ids) >= 2:
            tally_votes(totals, ids, votes, np.shape(outputs)[1])
        return
    x = as_outputs(outputs)
    if len(x) >= 2:
        tally_votes(totals, ids, loo_votes(x), x.shape[1])


def correlated_agreement_score(tally: Sequence[int]) -> float:
    """Agreements with the peers' consensus minus the agreements expected by chance.

    Multi-task peer prediction (Dasgupta & Ghosh 2013; the identity-matrix case of
    Shnayder et al.'s Correlated Agreement, 2016): with n queries, answer histogram f and
    the consensus's histogram g over those queries, the score is A − f·g / n. An answer
    that carries no information about the query — a random class, a constant, the argmax
    of noise around uniform, a colluders' shared coin — agrees with the consensus only as
    often as the two histograms overlap, so it scores ≈ 0 in expectation, however its
    answers are distributed; an informative one scores its agreement above chance.
    """
    c = (len(tally) - 1) // 2
    f, g = tally[1:1 + c], tally[1 + c:]
    n = sum(f)
    if n == 0:
        return 0.0
    return float(tally[0] - sum(a * b for a, b in zip(f, g, strict=True)) / n)


@register("correlated_agreement")
class CorrelatedAgreement:
    state_key: ClassVar[str] = "tallies"

    def initialize(self) -> State:
        return {}

    def add(self, state: State, ids: Sequence[str], outputs: F64, pre: Any = None) -> None:
        correlated_agreement_add(state, ids, outputs, pre)

    def add_batch(self, x: F64) -> Sequence[Any]:
        """Each query's (own, peer) votes; None for a lone participant (nothing to tally)."""
        if x.shape[1] < 2:
            return [None] * len(x)
        own, peer = loo_votes_batch(x)
        return list(zip(own.tolist(), peer.tolist(), strict=True))

    def close(self, state: State) -> dict[str, float]:
        return {pid: correlated_agreement_score(t) for pid, t in state.items()}
