"""The Gaussian mechanism on output vectors and its privacy accounting (RDP).

Per answered query a participant clips its output to L2 ≤ C and adds N(0, (σ·C)²) per
coordinate. Composition of n such answers is accounted in closed form as ONE
self-composed Gaussian event (dp-accounting's RDP accountant), so accounting a
micro-batch costs the same for 1 query as for 10,000.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import dp_accounting
import torch
from dp_accounting.rdp import RdpAccountant

from fi_stream.errors import PrivacyError

#: Upper bound for budget searches; no participant answers more in one accounting period.
MAX_ANSWERS = 10**9


@dataclass(frozen=True, kw_only=True)
class GaussianMechanism:
    clip_norm: float
    noise_multiplier: float

    def __post_init__(self) -> None:
        if not (self.clip_norm > 0 and math.isfinite(self.clip_norm)):
            raise PrivacyError(f"clip_norm must be a positive number, got {self.clip_norm}")
        if not (self.noise_multiplier >= 0 and math.isfinite(self.noise_multiplier)):
            raise PrivacyError(
                f"noise_multiplier must be >= 0, got {self.noise_multiplier}; use 0 only for tests")

    @property
    def noise_std(self) -> float:
        return self.noise_multiplier * self.clip_norm


@dataclass(frozen=True, kw_only=True)
class PrivacyBudget:
    epsilon_max: float
    delta: float

    def __post_init__(self) -> None:
        if not self.epsilon_max > 0:
            raise PrivacyError(f"epsilon_max must be > 0, got {self.epsilon_max}")
        if not 0 < self.delta < 1:
            raise PrivacyError(f"delta must be in (0, 1), got {self.delta}")


def clip_rows(x: torch.Tensor, clip_norm: float) -> torch.Tensor:
    """Scale each row to L2 norm ≤ `clip_norm` (rows already inside are unchanged)."""
    x32 = x.float()
    norms = torch.linalg.vector_norm(x32, ord=2, dim=-1, keepdim=True)
    # clamp(max=1) keeps short rows as they are; the tiny floor makes zero rows safe.
    scale: torch.Tensor = (clip_norm / norms.clamp_min(1e-12)).clamp(max=1.0)
    return x32 * scale


def privatize(x: torch.Tensor, mechanism: GaussianMechanism,
              generator: torch.Generator) -> torch.Tensor:
    """Clip every row, then add Gaussian noise drawn on x's device from `generator`."""
    clipped = clip_rows(x, mechanism.clip_norm)
    if mechanism.noise_multiplier == 0:
        return clipped
    noise = torch.randn(clipped.shape, generator=generator, device=clipped.device,
                        dtype=clipped.dtype)
    return clipped + noise * mechanism.noise_std


@lru_cache(maxsize=4096)
def epsilon_spent(answers: int, noise_multiplier: float, delta: float) -> float:
    """ε at δ after `answers` Gaussian answers of multiplier σ, composed under RDP."""
    if answers < 0:
        raise PrivacyError(f"answers must be >= 0, got {answers}")
    if answers == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    accountant = RdpAccountant()
    accountant.compose(dp_accounting.SelfComposedDpEvent(
        dp_accounting.GaussianDpEvent(noise_multiplier), answers))
    return float(accountant.get_epsilon(delta))


@lru_cache(maxsize=256)
def max_answers(epsilon_max: float, delta: float, noise_multiplier: float) -> int:
    """The largest n with epsilon_spent(n) ≤ epsilon_max (exponential, then binary search)."""
    if epsilon_spent(1, noise_multiplier, delta) > epsilon_max:
        return 0
    lo, hi = 1, 2
    while hi < MAX_ANSWERS and epsilon_spent(hi, noise_multiplier, delta) <= epsilon_max:
        lo, hi = hi, hi * 2
    if hi >= MAX_ANSWERS and epsilon_spent(MAX_ANSWERS, noise_multiplier, delta) <= epsilon_max:
        return MAX_ANSWERS
    while hi - lo > 1:  # invariant: eps(lo) <= max < eps(hi)
        mid = (lo + hi) // 2
        if epsilon_spent(mid, noise_multiplier, delta) <= epsilon_max:
            lo = mid
        else:
            hi = mid
    return lo


def answers_that_fit(spent_answers: int, wanted: int, budget: PrivacyBudget,
                     noise_multiplier: float) -> int:
    """How many of `wanted` new answers keep the total within the budget (never overspends)."""
    cap = max_answers(budget.epsilon_max, budget.delta, noise_multiplier)
    return max(0, min(wanted, cap - spent_answers))
