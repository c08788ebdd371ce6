"""What an aggregation strategy is, and the maths every strategy shares.

`outputs` is a (k, C) array, one noised output vector per participant, rows sorted by
participant id by the caller; everything accumulates in float64 so the auditor can
recompute a result bit for bit. Noised vectors may be negative or not sum to one: the
rules that need probabilities first project them with `to_simplex`.

A strategy is one class in one file of this package, registered by name
(`fi_stream.strategies.registry.register`). A strategy whose weights come from the
aggregator's history (`reward_weighted`, `spectral`) also keeps that history itself, per
aggregator partition (`StatefulStrategy`): the aggregator only hands it each window's
results and rewards and carries its `to_state()` in the commit metadata, so a restarted
owner resumes with the same weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


class Strategy(Protocol):
    """A pure, deterministic rule from the included outputs to one (C,) vector."""

    #: True when the rule takes per-participant `weights` (then recorded in the Result).
    takes_weights: ClassVar[bool]

    def aggregate(self, outputs: F64, **params: Any) -> F64:
        """`outputs`: a checked (k, C) float64 array (`as_outputs`)."""
        ...


class StrategyState(Protocol):
    """A stateful strategy's history on one aggregator partition."""

    def weights(self) -> Mapping[str, float] | None:
        """Per-participant weights for the next result (None: none yet, the plain mean)."""
        ...

    def observe(self, ids: Sequence[str], outputs: F64) -> None:
        """One result of the current window: its included ids (sorted) and their rows."""
        ...

    def close_window(self, rewards: Mapping[str, float]) -> None:
        """The current window closed with these rewards; the next window starts."""
        ...

    def to_state(self) -> Any:
        """JSON for the commit metadata; `from_state` of it resumes the same weights."""
        ...


@runtime_checkable
class StatefulStrategy(Strategy, Protocol):
    """A strategy with a per-partition history (`StrategyState`)."""

    #: Its key in the aggregator's resume state (the commit metadata).
    state_key: ClassVar[str]

    def from_state(self, saved: Any) -> StrategyState:
        """The history `to_state()` saved; None or empty: a fresh one."""
        ...


def as_outputs(outputs: npt.ArrayLike) -> F64:
    """A float64 (k ≥ 1, C ≥ 1) array of finite values, or ValueError naming the problem."""
    x = np.asarray(outputs, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"outputs must be a non-empty (participants, classes) array, "
                         f"got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("outputs contain NaN or Inf; such answers belong in the DLQ")
    return x


def to_simplex(v: npt.ArrayLike) -> F64:
    """Clamp at zero and renormalise (row-wise for 2-D); all-zero rows become uniform."""
    a = np.clip(np.asarray(v, dtype=np.float64), 0.0, None)
    total = a.sum(axis=-1, keepdims=True)
    uniform = np.full_like(a, 1.0 / a.shape[-1])
    out: F64 = np.where(total > 0, a / np.where(total > 0, total, 1.0), uniform)
    return out


def entropy(p: F64) -> F64:
    """Shannon entropy (nats) of each row of a row-stochastic matrix (0·log 0 = 0)."""
    logs = np.log(np.where(p > 0, p, 1.0))
    h: F64 = -(p * logs).sum(axis=-1)
    return h


def weighted_mean(x: F64, weights: F64) -> F64:
    """Σ w_k x_k / Σ w_k; all-zero weights fall back to the plain mean."""
    w = weights if weights.sum() > 0 else np.ones(len(x))
    mean: F64 = (w[:, None] * x).sum(axis=0) / w.sum()
    return mean
