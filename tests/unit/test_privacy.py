"""Clipping, noise scale and RDP accounting of the Gaussian mechanism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fi_stream.errors import PrivacyError
from fi_stream.privacy import (
    GaussianMechanism,
    PrivacyBudget,
    answers_that_fit,
    clip_rows,
    epsilon_spent,
    max_answers,
    privatize,
)

finite = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@given(arrays(np.float32, st.tuples(st.integers(1, 8), st.integers(1, 16)), elements=finite),
       st.floats(0.01, 100))
def test_clip_bound_holds_for_any_input(x: np.ndarray, c: float) -> None:
    clipped = clip_rows(torch.from_numpy(x), c)
    norms = torch.linalg.vector_norm(clipped.double(), dim=1)
    assert bool((norms <= c * (1 + 1e-5)).all())


@given(arrays(np.float32, st.tuples(st.integers(1, 8), st.integers(1, 16)),
              elements=st.floats(-0.125, 0.125, width=32)))
def test_rows_inside_the_ball_are_unchanged(x: np.ndarray) -> None:
    assert torch.equal(clip_rows(torch.from_numpy(x), 10.0), torch.from_numpy(x))


def test_zero_rows_are_safe() -> None:
    assert torch.equal(clip_rows(torch.zeros(2, 3), 1.0), torch.zeros(2, 3))


def test_empirical_noise_std_matches_sigma_times_c() -> None:
    mech = GaussianMechanism(clip_norm=2.0, noise_multiplier=0.75)
    n = 400_000
    x = torch.zeros(n // 10, 10)
    noise = privatize(x, mech, torch.Generator().manual_seed(1)).double().flatten()
    std = float(noise.std())
    # The sample std of n Gaussian draws has relative standard error ~ 1/sqrt(2n):
    # a 6-sigma bound makes a false failure practically impossible.
    assert abs(std / mech.noise_std - 1) < 6 / math.sqrt(2 * n)
    assert abs(float(noise.mean())) < 6 * mech.noise_std / math.sqrt(n)


def test_noise_comes_from_the_given_generator_only() -> None:
    mech = GaussianMechanism(clip_norm=1.0, noise_multiplier=1.0)
    x = torch.rand(4, 10)
    a = privatize(x, mech, torch.Generator().manual_seed(7))
    torch.manual_seed(123)  # global state must not matter
    b = privatize(x, mech, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_parameters_are_validated() -> None:
    with pytest.raises(PrivacyError):
        GaussianMechanism(clip_norm=0, noise_multiplier=1)
    with pytest.raises(PrivacyError):
        GaussianMechanism(clip_norm=1, noise_multiplier=-1)
    with pytest.raises(PrivacyError):
        PrivacyBudget(epsilon_max=1, delta=1.5)


@given(st.integers(0, 5000), st.floats(0.3, 5))
@settings(max_examples=40, deadline=None)
def test_epsilon_grows_with_answers_and_shrinks_with_noise(n: int, sigma: float) -> None:
    assert epsilon_spent(n, sigma, 1e-5) <= epsilon_spent(n + 1, sigma, 1e-5)
    assert epsilon_spent(n, sigma * 1.5, 1e-5) <= epsilon_spent(n, sigma, 1e-5)


def test_max_answers_is_the_exact_boundary() -> None:
    for eps_max, sigma in [(1.0, 5.0), (10.0, 1.0), (50.0, 0.8)]:
        n = max_answers(eps_max, 1e-5, sigma)
        assert epsilon_spent(n, sigma, 1e-5) <= eps_max < epsilon_spent(n + 1, sigma, 1e-5)


def test_answers_that_fit_never_overspend() -> None:
    budget = PrivacyBudget(epsilon_max=10.0, delta=1e-5)
    cap = max_answers(10.0, 1e-5, 1.0)
    assert answers_that_fit(0, 10**6, budget, 1.0) == cap
    assert answers_that_fit(cap - 2, 5, budget, 1.0) == 2
    assert answers_that_fit(cap, 5, budget, 1.0) == 0
