"""Clipping, noise scale, sensitivity and RDP accounting of both mechanisms, checked against
dp-accounting computed independently here."""

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
    Mechanism,
    PrivacyBudget,
    answers_that_fit,
    clip_rows,
    epsilon,
    epsilon_spent,
    max_answers,
    noise_multiplier_for,
    privatize,
    release,
    sensitivity,
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
    mech = Mechanism(clip_norm=2.0, noise_multiplier=0.75)
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
    mech = Mechanism(clip_norm=1.0, noise_multiplier=1.0)
    x = torch.rand(4, 10, generator=torch.Generator().manual_seed(0))
    a = privatize(x, mech, torch.Generator().manual_seed(7))
    torch.manual_seed(123)  # global state must not matter
    b = privatize(x, mech, torch.Generator().manual_seed(7))
    c = privatize(x, mech, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_zero_noise_multiplier_only_clips() -> None:
    mech = Mechanism(clip_norm=1.0, noise_multiplier=0.0)
    x = torch.tensor([[3.0, 4.0], [0.1, 0.2]])
    assert torch.equal(privatize(x, mech, torch.Generator()), clip_rows(x, 1.0))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_privatize_stays_on_the_device() -> None:
    mech = Mechanism(clip_norm=1.0, noise_multiplier=0.5)
    x = torch.rand(8, 10, device="cuda").to(torch.bfloat16)
    out = privatize(x, mech, torch.Generator(device="cuda").manual_seed(3))
    assert out.device == x.device and out.dtype == torch.float32


def test_mechanism_parameters_are_validated() -> None:
    assert Mechanism(clip_norm=2.0, noise_multiplier=0.5).noise_std == 1.0
    for clip, sigma in [(0, 1), (-1, 1), (math.inf, 1), (math.nan, 1), (1, -1), (1, math.nan)]:
        with pytest.raises(PrivacyError, match="must be"):
            Mechanism(clip_norm=clip, noise_multiplier=sigma)


def test_budget_is_validated() -> None:
    for eps, delta in [(0, 1e-5), (math.nan, 1e-5), (1, 0), (1, 1.5)]:
        with pytest.raises(PrivacyError):
            PrivacyBudget(epsilon_max=eps, delta=delta)


# -- sensitivity -----------------------------------------------------------------------------

def G(sigma: float) -> Mechanism:
    return Mechanism(noise_multiplier=sigma)


def T(k: int, sigma: float) -> Mechanism:
    return Mechanism(name="teachers", noise_multiplier=sigma, teachers=k)


def _dp_accounting(multiplier: float, answers: int, delta: float = DELTA) -> float:
    accountant = RdpAccountant()
    accountant.compose(dp_accounting.SelfComposedDpEvent(
        dp_accounting.GaussianDpEvent(multiplier), answers))
    return float(accountant.get_epsilon(delta))


@given(st.floats(1e-3, 1e3))
def test_gaussian_sensitivity_is_the_diameter_of_the_clipped_probability_set(c: float) -> None:
    assert sensitivity("gaussian", c) == pytest.approx(math.sqrt(2) * c)
    # Attained: two one-hot probability vectors clipped to C are √2·C apart.
    a, b = torch.eye(10, dtype=torch.float64)[:2] * c
    assert float(torch.linalg.vector_norm(a - b)) == pytest.approx(sensitivity("gaussian", c))


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, (2, 10), elements=st.floats(0, 1e3)), st.floats(0.01, 100))
def test_no_two_clipped_non_negative_vectors_are_further_apart(x: np.ndarray, c: float) -> None:
    a, b = clip_rows(torch.from_numpy(x), c).double()
    assert float(torch.linalg.vector_norm(a - b)) <= sensitivity("gaussian", c) * (1 + 1e-5)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 64), st.data())
def test_teachers_sensitivity_is_one_changed_vote(k: int, data: st.DataObject) -> None:
    """Replace one record: it lives in one teacher's part, so at most that vote moves."""
    votes = data.draw(st.lists(st.integers(0, 9), min_size=k, max_size=k))
    changed = list(votes)
    changed[data.draw(st.integers(0, k - 1))] = data.draw(st.integers(0, 9))
    hist = [np.bincount(v, minlength=10) / k for v in (votes, changed)]
    assert np.linalg.norm(hist[0] - hist[1]) <= sensitivity("teachers", 1.0, k) + 1e-12
    assert sensitivity("teachers", 1.0, k) == pytest.approx(math.sqrt(2) / k)
    assert np.linalg.norm(hist[0]) <= 1.0  # the histogram's bound C = 1


def test_mechanism_names_and_parameters_are_checked() -> None:
    with pytest.raises(PrivacyError, match="teachers K"):
        Mechanism(name="teachers", noise_multiplier=1.0)
    with pytest.raises(PrivacyError, match=r"clip_norm = 1\.0"):
        Mechanism(name="teachers", noise_multiplier=1.0, teachers=4, clip_norm=2.0)
    with pytest.raises(PrivacyError, match="no teachers"):
        Mechanism(noise_multiplier=1.0, teachers=4)
    with pytest.raises(PrivacyError, match="unknown mechanism"):
        sensitivity("laplace", 1.0)  # type: ignore[arg-type]
    m = T(8, 0.5)
    assert Mechanism.from_privacy(m.to_privacy()) == m


def test_release_clips_softmax_for_gaussian_and_keeps_the_histogram_for_teachers() -> None:
    logits = torch.tensor([[10.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    g = release(logits, Mechanism(noise_multiplier=0.0, clip_norm=0.5), torch.Generator())
    assert torch.allclose(g, clip_rows(torch.softmax(logits, -1), 0.5))
    hist = torch.tensor([[0.75, 0.25, 0.0]])
    assert torch.equal(release(hist, T(4, 0.0), torch.Generator()), hist)


# -- accounting --------------------------------------------------------------------------------

def test_the_worked_values_of_the_issue() -> None:
    """dp-accounting RDP at δ = 1e-5, replace-one: gaussian σ = 1 → multiplier 1/√2;
    teachers K = 8, σ = 0.5 → multiplier σ·K/√2 = 2√2."""
    g = _dp_accounting(1 / math.sqrt(2), 1000)
    t = _dp_accounting(0.5 * 8 / math.sqrt(2), 1000)
    assert g == pytest.approx(1212, abs=1) and t == pytest.approx(114, abs=1)
    assert epsilon_spent(1000, G(1.0), DELTA) == pytest.approx(g, rel=1e-12)
    assert epsilon_spent(1000, T(8, 0.5), DELTA) == pytest.approx(t, rel=1e-12)
    assert G(1.0).accountant_multiplier == pytest.approx(1 / math.sqrt(2))
    assert T(8, 0.5).accountant_multiplier == pytest.approx(2 * math.sqrt(2))


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["gaussian", "teachers"]), st.integers(1, 32), st.floats(0.05, 20),
       st.floats(0.1, 10), st.integers(1, 100_000))
def test_epsilon_is_dp_accounting_at_noise_std_over_sensitivity(
        name: str, k: int, sigma: float, c: float, n: int) -> None:
    m = (Mechanism(noise_multiplier=sigma, clip_norm=c) if name == "gaussian" else T(k, sigma))
    expected = _dp_accounting(m.noise_std / sensitivity(m.name, m.clip_norm, m.teachers), n)
    assert epsilon_spent(n, m, DELTA) == pytest.approx(expected, rel=1e-9)


def test_mixed_spend_composes_every_event() -> None:
    accountant = RdpAccountant()
    accountant.compose(dp_accounting.SelfComposedDpEvent(
        dp_accounting.GaussianDpEvent(1.3 / math.sqrt(2)), 40))
    accountant.compose(dp_accounting.SelfComposedDpEvent(
        dp_accounting.GaussianDpEvent(0.3 * 16 / math.sqrt(2)), 700))
    assert epsilon({G(1.3): 40, T(16, 0.3): 700}, DELTA) == pytest.approx(
        accountant.get_epsilon(DELTA), rel=1e-9)


def test_epsilon_edge_cases() -> None:
    assert epsilon_spent(0, G(1.0), DELTA) == 0.0
    assert epsilon_spent(0, G(0.0), DELTA) == 0.0
    assert epsilon_spent(3, G(0.0), DELTA) == math.inf
    assert epsilon({}, DELTA) == 0.0
    for n, delta in [(-1, DELTA), (1, 0.0), (1, 1.0)]:
        with pytest.raises(PrivacyError):
            epsilon_spent(n, G(1.0), delta)


def test_closed_form_equals_composing_answers_one_by_one() -> None:
    accountant = RdpAccountant()
    for _ in range(7):
        accountant.compose(dp_accounting.GaussianDpEvent(1.3 / math.sqrt(2)))
    assert epsilon_spent(7, G(1.3), DELTA) == pytest.approx(accountant.get_epsilon(DELTA),
                                                             rel=1e-12)


@given(st.integers(0, 5000), st.floats(0.3, 5))
@settings(max_examples=40, deadline=None)
def test_epsilon_grows_with_answers_and_shrinks_with_noise(n: int, sigma: float) -> None:
    assert epsilon_spent(n, G(sigma), DELTA) <= epsilon_spent(n + 1, G(sigma), DELTA)
    assert epsilon_spent(n, G(sigma * 1.5), DELTA) <= epsilon_spent(n, G(sigma), DELTA)


@pytest.mark.parametrize(("eps_max", "mech"), [(1.0, G(8.0)), (10.0, G(1.0)), (50.0, G(0.8)),
                                                 (3.0, G(20.0)), (100.0, T(16, 0.3))])
def test_max_answers_is_the_exact_boundary(eps_max: float, mech: Mechanism) -> None:
    n = max_answers(PrivacyBudget(eps_max, DELTA), mech)
    assert n >= 1
    assert epsilon_spent(n, mech, DELTA) <= eps_max < epsilon_spent(n + 1, mech, DELTA)


def test_max_answers_counts_what_other_mechanisms_spent() -> None:
    budget = PrivacyBudget(100.0, DELTA)
    alone = max_answers(budget, T(16, 0.3))
    after = max_answers(budget, T(16, 0.3), {G(2.0): 50})
    assert after < alone
    assert epsilon({G(2.0): 50, T(16, 0.3): after}, DELTA) <= 100.0
    assert epsilon({G(2.0): 50, T(16, 0.3): after + 1}, DELTA) > 100.0


def test_max_answers_extremes() -> None:
    assert max_answers(PrivacyBudget(0.1, DELTA), G(0.5)) == 0  # not even one answer fits
    assert max_answers(PrivacyBudget(1.0, DELTA), G(0.0)) == 0  # no noise, no privacy
    assert max_answers(PrivacyBudget(1e9, DELTA), G(1e4)) == MAX_ANSWERS


@given(st.integers(0, 3000), st.integers(0, 3000))
@settings(max_examples=50, deadline=None)
def test_answers_that_fit_never_overspend(spent: int, wanted: int) -> None:
    budget, mech = PrivacyBudget(epsilon_max=10.0, delta=DELTA), G(2.0)
    granted = answers_that_fit({mech: spent}, mech, wanted, budget)
    assert 0 <= granted <= wanted
    if granted:
        assert epsilon_spent(spent + granted, mech, DELTA) <= budget.epsilon_max
    if granted < wanted:  # it granted all it could
        assert epsilon_spent(spent + granted + 1, mech, DELTA) > budget.epsilon_max


def test_answers_that_fit_at_the_cap() -> None:
    budget, mech = PrivacyBudget(epsilon_max=10.0, delta=DELTA), G(4.0)
    cap = max_answers(budget, mech)
    assert cap > 2
    assert answers_that_fit({}, mech, 10**6, budget) == cap
    assert answers_that_fit({mech: cap - 2}, mech, 5, budget) == 2
    assert answers_that_fit({mech: cap}, mech, 5, budget) == 0
    assert answers_that_fit({mech: cap + 10}, mech, 5, budget) == 0
    with pytest.raises(PrivacyError):
        answers_that_fit({mech: -1}, mech, 5, budget)


@pytest.mark.parametrize(("target", "name", "k"), [(100.0, "teachers", 16), (30.0, "teachers", 32),
                                                   (1000.0, "gaussian", None)])
def test_noise_multiplier_for_solves_the_accountant(target: float, name: str,
                                                    k: int | None) -> None:
    sigma = noise_multiplier_for(target, 1000, DELTA, name=name, teachers=k)  # type: ignore[arg-type]
    m = Mechanism(name=name, noise_multiplier=sigma, teachers=k)  # type: ignore[arg-type]
    assert epsilon_spent(1000, m, DELTA) <= target
    slightly_less = Mechanism(name=name, noise_multiplier=sigma * (1 - 1e-4), teachers=k)  # type: ignore[arg-type]
    assert epsilon_spent(1000, slightly_less, DELTA) > target
