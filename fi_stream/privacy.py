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

_TINY = torch.finfo(torch.float32).tiny


def _check_clip_norm(clip_norm: float) -> None:
    if not (clip_norm > 0 and math.isfinite(clip_norm)):
        raise PrivacyError(
            f"clip_norm must be a finite number > 0, got {clip_norm}; "
            "set privacy.clip_norm (1.0 bounds a probability vector)")


def _check_noise_multiplier(noise_multiplier: float) -> None:
    if not (noise_multiplier >= 0 and math.isfinite(noise_multiplier)):
        raise PrivacyError(
            f"noise_multiplier must be a finite number >= 0, got {noise_multiplier}; "
            "set privacy.noise_multiplier (0 disables noise and privacy)")


def _check_delta(delta: float) -> None:
    if not 0 < delta < 1:
        raise PrivacyError(
            f"delta must be in (0, 1), got {delta}; pick one well below 1/(number of records)")


@dataclass(frozen=True, kw_only=True)
class GaussianMechanism:
    """Clip to L2 ≤ clip_norm, then add N(0, (noise_multiplier·clip_norm)²) per coordinate."""

    clip_norm: float
    noise_multiplier: float

    def __post_init__(self) -> None:
        _check_clip_norm(self.clip_norm)
        _check_noise_multiplier(self.noise_multiplier)

    @property
    def noise_std(self) -> float:
        return self.noise_multiplier * self.clip_norm


@dataclass(frozen=True)
class PrivacyBudget:
    """(ε_max, δ) a participant may spend in one accounting period; ε_max may be inf."""

    epsilon_max: float
    delta: float

    def __post_init__(self) -> None:
        if not self.epsilon_max > 0:  # also rejects NaN
            raise PrivacyError(
                f"epsilon_max must be > 0, got {self.epsilon_max}; "
                "set privacy.epsilon_max to the ε a participant may spend")
        _check_delta(self.delta)


def clip_rows(x: torch.Tensor, clip_norm: float) -> torch.Tensor:
    """Scale each row (dim 0; a 1-D tensor is one row) to L2 norm ≤ `clip_norm`.

    Returns float32 on x's device; rows already inside the ball are returned unchanged.
    Norms are taken in float32 (bf16 would round the bound away) on rows divided by their
    largest |entry|: a huge finite row cannot overflow its norm to inf, a long row is
    rescaled from that unit-peak form (no subnormal scale factor eats its precision),
    and a zero row never divides by zero.
    """
    _check_clip_norm(clip_norm)
    if x.ndim == 0:
        raise ValueError("clip_rows needs at least one dimension (rows); got a scalar")
    x32 = x.to(torch.float32)
    if x32.numel() == 0:
        return x32.clone()
    rows = x32.reshape(x32.shape[0], -1) if x32.ndim > 1 else x32.reshape(1, -1)
    peak = rows.abs().amax(dim=1, keepdim=True).clamp_min(_TINY)
    unit = rows / peak
    unit_norm: torch.Tensor = torch.linalg.vector_norm(unit, ord=2, dim=1, keepdim=True)
    inside = peak * unit_norm <= clip_norm  # an overflow to inf correctly says "outside"
    clipped = unit * (clip_norm / unit_norm.clamp_min(_TINY))
    return torch.where(inside, rows, clipped).reshape(x32.shape)


def privatize(x: torch.Tensor, mechanism: GaussianMechanism,
              generator: torch.Generator) -> torch.Tensor:
    """Clip every row, then add Gaussian noise drawn on x's device from `generator`.

    The generator must live on x's device; drawing from it (never from global state)
    keeps the noise reproducible for tests and unpredictable when seeded secretly.
    """
    clipped = clip_rows(x, mechanism.clip_norm)
    if mechanism.noise_multiplier == 0:
        return clipped
    noise = torch.randn(clipped.shape, generator=generator, device=clipped.device,
                        dtype=torch.float32)
    return clipped + noise * mechanism.noise_std


@lru_cache(maxsize=4096)
def epsilon_spent(answers: int, noise_multiplier: float, delta: float) -> float:
    """ε at δ after `answers` Gaussian answers of multiplier σ, composed under RDP.

    Non-decreasing in `answers` (RDP adds up linearly, the conversion to ε is monotone),
    which is what lets `max_answers` binary-search it.
    """
    if answers < 0:
        raise PrivacyError(f"answers must be >= 0, got {answers}")
    _check_noise_multiplier(noise_multiplier)
    _check_delta(delta)
    if answers == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    accountant = RdpAccountant()
    accountant.compose(dp_accounting.SelfComposedDpEvent(
        dp_accounting.GaussianDpEvent(noise_multiplier), int(answers)))
    return float(accountant.get_epsilon(delta))


@lru_cache(maxsize=256)
def max_answers(epsilon_max: float, delta: float, noise_multiplier: float) -> int:
    """The largest n ≤ MAX_ANSWERS with epsilon_spent(n) ≤ epsilon_max."""
    def fits(n: int) -> bool:
        return epsilon_spent(n, noise_multiplier, delta) <= epsilon_max

    if not fits(1):
        return 0
    lo, hi = 1, 2  # exponential search for a bracket: fits(lo) and (hi too far or not fits(hi))
    while hi < MAX_ANSWERS and fits(hi):
        lo, hi = hi, hi * 2
    if hi >= MAX_ANSWERS:
        if fits(MAX_ANSWERS):
            return MAX_ANSWERS
        hi = MAX_ANSWERS
    while hi - lo > 1:  # invariant: fits(lo) and not fits(hi)
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


def answers_that_fit(spent_answers: int, wanted: int, budget: PrivacyBudget,
                     noise_multiplier: float) -> int:
    """How many of `wanted` new answers keep the total within the budget (never overspends)."""
    if spent_answers < 0 or wanted < 0:
        raise PrivacyError(
            f"spent_answers and wanted must be >= 0, got {spent_answers} and {wanted}")
    cap = max_answers(budget.epsilon_max, budget.delta, noise_multiplier)
    return max(0, min(wanted, cap - spent_answers))
