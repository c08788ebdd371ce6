"""ε against values computed outside the project (issue 18).

Two independent references: dp-accounting called directly (not through
fi_stream.privacy), and closed forms written here: the exact ε of one Gaussian answer
(Balle & Wang 2018, analytic Gaussian mechanism) is a lower bound, the classic RDP
conversion min_α n·α·Δ²/(2σ²) + log(1/δ)/(α−1) an upper bound of what the RDP accountant
may report.
"""

from __future__ import annotations

import math

import dp_accounting
import pytest
from dp_accounting.rdp import RdpAccountant

from fi_stream.privacy import Mechanism, epsilon_spent

DELTA = 1e-5


def _dp_accounting(noise_multiplier: float, answers: int, delta: float = DELTA) -> float:
    acc = RdpAccountant()
    acc.compose(dp_accounting.SelfComposedDpEvent(
        dp_accounting.GaussianDpEvent(noise_multiplier), answers))
    return float(acc.get_epsilon(delta))


def _phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def analytic_delta(eps: float, sigma: float) -> float:
    """δ(ε) of one Gaussian answer with sensitivity 1 and std σ (exact)."""
    a, b = 1 / (2 * sigma), eps * sigma
    return _phi(a - b) - math.exp(eps) * _phi(-a - b)


def analytic_epsilon(sigma: float, delta: float = DELTA) -> float:
    lo, hi = 0.0, 100.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if analytic_delta(mid, sigma) <= delta else (mid, hi)
    return hi


def classic_rdp_epsilon(sigma: float, answers: int, delta: float = DELTA) -> float:
    orders = [1 + k / 1000 for k in range(1, 200_000)]
    return min(answers * a / (2 * sigma**2) + math.log(1 / delta) / (a - 1) for a in orders)


def test_the_known_replace_one_value_from_dp_accounting() -> None:
    """σ = 1, 1000 answers, δ = 1e-5, replace-one on probability vectors (‖p − q‖ ≤ √2·C):
    the effective multiplier is σ/√2 and ε ≈ 1212 (issue 18, computed with dp-accounting)."""
    assert _dp_accounting(1 / math.sqrt(2), 1000) == pytest.approx(1212, rel=1e-3)
    assert _dp_accounting(1.0, 1000) == pytest.approx(654.86, rel=1e-4)  # add/remove-one


def test_project_epsilon_is_the_replace_one_value() -> None:
    mechanism = Mechanism(clip_norm=1.0, noise_multiplier=1.0)
    assert epsilon_spent(1000, mechanism, DELTA) == pytest.approx(1212, rel=1e-3)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0, 5.0])
def test_one_answer_lies_between_the_exact_and_the_classic_bound(sigma: float) -> None:
    exact = analytic_epsilon(sigma)
    rdp = _dp_accounting(sigma, 1)
    assert exact <= rdp * (1 + 1e-9)
    assert rdp <= classic_rdp_epsilon(sigma, 1) * (1 + 1e-9)
    assert rdp < 3 * exact + 2  # RDP is loose for one answer, not wildly so


@pytest.mark.parametrize(("sigma", "answers"), [(1.0, 1000), (2.0, 100), (5.0, 10_000)])
def test_many_answers_stay_under_the_classic_rdp_bound(sigma: float, answers: int) -> None:
    rdp = _dp_accounting(sigma, answers)
    classic = classic_rdp_epsilon(sigma, answers)
    # dp-accounting evaluates a fixed grid of orders α (this bound a near-continuous one),
    # which may cost it up to ~0.5 % here; its better conversion wins back the rest.
    assert rdp <= classic * 1.01
    assert rdp >= 0.9 * classic  # the improved conversion gains little at these sizes
