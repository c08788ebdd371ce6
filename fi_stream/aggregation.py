"""Aggregating the included outputs of a query: `aggregate(outputs, strategy)`.

The strategies themselves live one per file in `fi_stream.strategies` (registered by
name); this module is the call every caller uses, plus the shared maths they need.
`outputs` is a (k, C) array, one noised output vector per participant, rows sorted by
participant id by the caller; everything accumulates in float64 so the auditor can
recompute a result bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fi_stream.strategies import STRATEGIES, Strategy, get_strategy
from fi_stream.strategies.base import F64, as_outputs, entropy, to_simplex, weighted_mean
from fi_stream.strategies.entropy_weighted import entropy_weighted
from fi_stream.strategies.hard_vote import hard_vote
from fi_stream.strategies.js_consensus import js_consensus
from fi_stream.strategies.median import median
from fi_stream.strategies.soft_vote import soft_vote, soft_vote_batch
from fi_stream.strategies.spectral import spectral_weights
from fi_stream.strategies.trimmed_mean import trimmed_mean
from fi_stream.strategies.weighted import weighted

__all__ = [
    "F64", "STRATEGIES", "Aggregate", "Strategy", "aggregate",
    "as_outputs", "entropy", "entropy_weighted", "hard_vote", "js_consensus", "median",
    "soft_vote", "soft_vote_batch", "spectral_weights", "takes_weights", "to_simplex",
    "trimmed_mean", "weighted", "weighted_mean",
]


@dataclass(frozen=True)
class Aggregate:
    vector: F64
    prediction: int
    confidence: float


def aggregate(outputs: npt.ArrayLike, strategy: str = "soft_vote", **params: Any) -> Aggregate:
    """Apply `strategy`; prediction is the argmax, confidence its share after projection."""
    vector = get_strategy(strategy).aggregate(as_outputs(outputs), **params)
    prediction = int(np.argmax(vector))
    return Aggregate(vector, prediction, float(to_simplex(vector)[prediction]))


def takes_weights(strategy: str) -> bool:
    """Does `strategy` take per-participant weights (recorded in the Result)?"""
    return get_strategy(strategy).takes_weights
