"""Clipping, noise scale and RDP accounting of the Gaussian mechanism."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
import torch
from dp_accounting.rdp import RdpAccountant
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fi_stream.errors import PrivacyError
from fi_stream.privacy import (
    MAX_ANSWERS,
    GaussianMechanism,
    PrivacyBudget,
    answers_that_fit,
    clip_rows,
    epsilon_spent,
    max_answers,
    privatize,
)

DELTA = 1e-5
any_finite32 = st.floats(allow_nan=False, allow_infinity=False, width=32)
matrices = arrays(np.float32, st.tuples(st.integers(1, 8), st.integers(1, 16)),
                  elements=any_finite32)
clip_norms = st.floats(1e-3, 1e3)


def row_norms(t: torch.Tensor) -> torch.Tensor:
    norms: torch.Tensor = torch.linalg.vector_norm(t.double().reshape(t.shape[0], -1), dim=1)
    return norms


# -- clipping ----------------------------------------------------------------------------------

@given(matrices, clip_norms)
def test_clip_bound_holds_for_any_finite_input(x: np.ndarray, c: float) -> None:
    clipped = clip_rows(torch.from_numpy(x), c)
    assert clipped.dtype == torch.float32 and clipped.shape == x.shape
    assert bool(torch.isfinite(clipped).all())
    assert bool((row_norms(clipped) <= c * (1 + 1e-5)).all())


@given(matrices, clip_norms)
def test_clipping_only_shrinks_and_keeps_direction(x: np.ndarray, c: float) -> None:
    t = torch.from_numpy(x).double()
    clipped = clip_rows(torch.from_numpy(x), c).double()
    norms = row_norms(t)
    # Rows well inside the ball are untouched; rows outside are scaled towards 0.
    inside = norms <= c * (1 - 1e-5)
    assert torch.equal(clipped[inside], t[inside])
    assert bool((clipped.abs() <= t.abs()).all())
    assert bool(((clipped * t) >= 0).all())


def test_clip_rows_scales_a_long_row_to_exactly_the_bound() -> None:
    x = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    assert torch.allclose(clip_rows(x, 1.0), torch.tensor([[0.6, 0.8], [0.3, 0.4]]))


def test_zero_rows_and_huge_rows_are_safe() -> None:
    assert torch.equal(clip_rows(torch.zeros(2, 3), 1.0), torch.zeros(2, 3))
    big = torch.full((1, 4), 3e38)  # its norm overflows float32
    assert torch.allclose(clip_rows(big, 2.0), torch.full((1, 4), 1.0))


def test_bf16_input_is_clipped_in_float32() -> None:
    x = (torch.arange(12, dtype=torch.float32).reshape(3, 4) - 5).to(torch.bfloat16)
    clipped = clip_rows(x, 0.5)
    assert clipped.dtype == torch.float32
    assert torch.allclose(row_norms(clipped), torch.full((3,), 0.5, dtype=torch.float64))


def test_rows_are_dim_zero_for_any_rank() -> None:
    x = torch.full((2, 3, 4), 1.0)
    assert torch.allclose(row_norms(clip_rows(x, 1.0)), torch.ones(2, dtype=torch.float64))
    v = torch.tensor([3.0, 4.0])  # a single vector is one row
    assert torch.allclose(clip_rows(v, 1.0), torch.tensor([0.6, 0.8]))


def test_clip_rows_does_not_modify_its_input() -> None:
    x = torch.tensor([[3.0, 4.0]])
    clip_rows(x, 1.0)
    assert torch.equal(x, torch.tensor([[3.0, 4.0]]))


def test_clip_rows_rejects_bad_bounds_and_scalars() -> None:
    with pytest.raises(PrivacyError, match="clip_norm"):
        clip_rows(torch.ones(1, 2), 0.0)
    with pytest.raises(ValueError, match="scalar"):
        clip_rows(torch.tensor(1.0), 1.0)


# -- noise -------------------------------------------------------------------------------------

def test_empirical_noise_std_matches_sigma_times_c() -> None:
    mech = GaussianMechanism(clip_norm=2.0, noise_multiplier=0.75)
    n = 200_000
    x = torch.full((n // 10, 10), 1.0)  # norm √10 > C: every row is clipped first
    noise = (privatize(x, mech, torch.Generator().manual_seed(1))
             - clip_rows(x, mech.clip_norm)).double().flatten()
    # (n−1)s²/σ² ~ χ²(n−1), so s/σ has standard error ≈ 1/√(2n) ≈ 0.16 %: the 1 % bound
    # is a > 6-sigma event, and the seed makes the test deterministic anyway.
    assert 6 / math.sqrt(2 * n) < 0.01
    assert abs(float(noise.std()) / mech.noise_std - 1) < 0.01
    assert abs(float(noise.mean())) < 6 * mech.noise_std / math.sqrt(n)


def test_noise_comes_from_the_given_generator_only() -> None:
    mech = GaussianMechanism(clip_norm=1.0, noise_multiplier=1.0)
    x = torch.rand(4, 10, generator=torch.Generator().manual_seed(0))
    a = privatize(x, mech, torch.Generator().manual_seed(7))
    torch.manual_seed(123)  # global state must not matter
    b = privatize(x, mech, torch.Generator().manual_seed(7))
    c = privatize(x, mech, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_zero_noise_multiplier_only_clips() -> None:
    mech = GaussianMechanism(clip_norm=1.0, noise_multiplier=0.0)
    x = torch.tensor([[3.0, 4.0], [0.1, 0.2]])
    assert torch.equal(privatize(x, mech, torch.Generator()), clip_rows(x, 1.0))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_privatize_stays_on_the_device() -> None:
    mech = GaussianMechanism(clip_norm=1.0, noise_multiplier=0.5)
    x = torch.rand(8, 10, device="cuda").to(torch.bfloat16)
    out = privatize(x, mech, torch.Generator(device="cuda").manual_seed(3))
    assert out.device == x.device and out.dtype == torch.float32


def test_mechanism_parameters_are_validated() -> None:
    assert GaussianMechanism(clip_norm=2.0, noise_multiplier=0.5).noise_std == 1.0
    for clip, sigma in [(0, 1), (-1, 1), (math.inf, 1), (math.nan, 1), (1, -1), (1, math.nan)]:
        with pytest.raises(PrivacyError, match="must be"):
            GaussianMechanism(clip_norm=clip, noise_multiplier=sigma)


def test_budget_is_validated() -> None:
    for eps, delta in [(0, 1e-5), (math.nan, 1e-5), (1, 0), (1, 1.5)]:
        with pytest.raises(PrivacyError):
            PrivacyBudget(epsilon_max=eps, delta=delta)


# -- accounting --------------------------------------------------------------------------------

def test_epsilon_edge_cases() -> None:
    assert epsilon_spent(0, 1.0, DELTA) == 0.0
    assert epsilon_spent(0, 0.0, DELTA) == 0.0
    assert epsilon_spent(3, 0.0, DELTA) == math.inf
    for args in [(-1, 1.0, DELTA), (1, -1.0, DELTA), (1, 1.0, 0.0), (1, 1.0, 1.0)]:
        with pytest.raises(PrivacyError):
            epsilon_spent(*args)


def test_closed_form_equals_composing_answers_one_by_one() -> None:
    accountant = RdpAccountant()
    for _ in range(7):
        accountant.compose(dp_accounting.GaussianDpEvent(1.3))
    assert epsilon_spent(7, 1.3, DELTA) == pytest.approx(accountant.get_epsilon(DELTA), rel=1e-12)


@given(st.integers(0, 5000), st.floats(0.3, 5))
@settings(max_examples=40, deadline=None)
def test_epsilon_grows_with_answers_and_shrinks_with_noise(n: int, sigma: float) -> None:
    assert epsilon_spent(n, sigma, DELTA) <= epsilon_spent(n + 1, sigma, DELTA)
    assert epsilon_spent(n, sigma * 1.5, DELTA) <= epsilon_spent(n, sigma, DELTA)


@pytest.mark.parametrize(("eps_max", "sigma"), [(1.0, 5.0), (10.0, 1.0), (50.0, 0.8),
                                                  (3.0, 20.0)])
def test_max_answers_is_the_exact_boundary(eps_max: float, sigma: float) -> None:
    n = max_answers(eps_max, DELTA, sigma)
    assert n >= 1
    assert epsilon_spent(n, sigma, DELTA) <= eps_max < epsilon_spent(n + 1, sigma, DELTA)


def test_max_answers_extremes() -> None:
    assert max_answers(0.1, DELTA, 0.5) == 0  # not even one answer fits
    assert max_answers(1.0, DELTA, 0.0) == 0  # no noise, no privacy
    assert max_answers(1e9, DELTA, 1e4) == MAX_ANSWERS


@given(st.integers(0, 3000), st.integers(0, 3000))
@settings(max_examples=50, deadline=None)
def test_answers_that_fit_never_overspend(spent: int, wanted: int) -> None:
    budget, sigma = PrivacyBudget(epsilon_max=10.0, delta=DELTA), 2.0
    granted = answers_that_fit(spent, wanted, budget, sigma)
    assert 0 <= granted <= wanted
    if granted:
        assert epsilon_spent(spent + granted, sigma, DELTA) <= budget.epsilon_max
    if granted < wanted:  # it granted all it could
        assert epsilon_spent(spent + granted + 1, sigma, DELTA) > budget.epsilon_max


def test_answers_that_fit_at_the_cap() -> None:
    budget = PrivacyBudget(epsilon_max=10.0, delta=DELTA)
    cap = max_answers(10.0, DELTA, 1.0)
    assert answers_that_fit(0, 10**6, budget, 1.0) == cap
    assert answers_that_fit(cap - 2, 5, budget, 1.0) == 2
    assert answers_that_fit(cap, 5, budget, 1.0) == 0
    assert answers_that_fit(cap + 10, 5, budget, 1.0) == 0
    with pytest.raises(PrivacyError):
        answers_that_fit(-1, 5, budget, 1.0)
