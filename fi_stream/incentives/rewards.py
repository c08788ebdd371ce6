"""Splitting a window's budget among its participants in proportion to their scores."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np


def split_rewards(scores: Mapping[str, float], budget: float) -> dict[str, float]:
    """The budget in proportion to positive scores; nothing for non-positive ones.

    Negative scores earn 0 rather than a debt: a reward is a payment, never a fine.
    """
    if not (budget >= 0 and math.isfinite(budget)):
        raise ValueError(f"budget must be a finite number >= 0, got {budget}")
    ids = sorted(scores)
    raw = np.array([scores[i] for i in ids], dtype=np.float64)
    if not np.isfinite(raw).all():
        raise ValueError("scores contain NaN or Inf")
    positive = np.clip(raw, 0.0, None)
    top = positive.max(initial=0.0)
    if top <= 0:
        return dict.fromkeys(ids, 0.0)
    # Scaling by the largest score first keeps both tiny (subnormal) and huge scores exact
    # enough that the shares sum to 1 within rounding.
    scaled = positive / top
    shares = scaled / scaled.sum()
    return {i: float(budget * s) for i, s in zip(ids, shares, strict=True)}
