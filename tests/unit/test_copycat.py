"""Copycat detection: the false-flag bound (property + statistics) and the flagging rule."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import binomtest, chi2

from fi_stream.copycat import (
    FALSE_FLAG_RATE,
    chi2_lower_bound,
    flag_copies,
    pair_thresholds,
    screen_copies,
    squared_distances,
    suspicious,
)


@given(width=st.integers(1, 400), p=st.floats(1e-15, 0.5))
def test_bound_never_exceeds_the_exact_chi2_quantile(width: int, p: float) -> None:
    q = chi2_lower_bound(width, p)
    assert q > 0
    assert chi2.cdf(q, width) <= p * (1 + 1e-9)


def test_bound_is_tight_where_it_matters() -> None:
    """Digits rows (d = 10) at 1e-9: within 1 % of the exact quantile."""
    q = chi2_lower_bound(10, FALSE_FLAG_RATE)
    assert q == pytest.approx(chi2.ppf(FALSE_FLAG_RATE, 10), rel=0.01)


def _honest_pairs(rng: np.random.Generator, n: int, d: int, s_a: float, s_b: float,
                  clean_gap: float) -> tuple[np.ndarray, np.ndarray]:
    clean_a = np.zeros((n, d))
    clean_a[:, 0] = 1.0
    clean_b = clean_a.copy()
    clean_b[:, 1] = clean_gap  # the models disagree a little (or not at all)
    return clean_a + rng.normal(0, s_a, (n, d)), clean_b + rng.normal(0, s_b, (n, d))


@pytest.mark.parametrize(("d", "s_a", "s_b", "gap"), [
    (10, 0.3, 0.3, 0.0), (10, 0.3, 0.05, 0.0), (3, 0.5, 0.2, 0.1), (64, 0.1, 0.1, 0.0)])
def test_false_flags_at_a_testable_rate_stay_below_it(d: int, s_a: float, s_b: float,
                                                      gap: float) -> None:
    """At p = 1e-3 the bound is checkable by sampling: the flag rate of independently
    noised honest pairs is ≤ p (one-sided binomial test at 1e-4), identical models included."""
    p = 1e-3
    rng = np.random.default_rng([d, int(1000 * s_a)])
    n = 200_000
    a, b = _honest_pairs(rng, n, d, s_a, s_b, gap)
    d2 = ((a - b) ** 2).sum(axis=1)
    flags = int((d2 < pair_thresholds([s_a, s_b], d, p)[0, 1]).sum())
    assert binomtest(flags, n, p, alternative="greater").pvalue > 1e-4, flags


def test_no_false_flag_in_a_million_honest_pairs_at_the_default_rate() -> None:
    rng = np.random.default_rng(7)
    a, b = _honest_pairs(rng, 1_000_000, 10, 0.3, 0.3, 0.0)
    d2 = ((a - b) ** 2).sum(axis=1)
    assert not (d2 < pair_thresholds([0.3, 0.3], 10)[0, 1]).any()


rows = arrays(np.float64, st.tuples(st.integers(2, 6), st.integers(1, 12)),
              elements=st.floats(-2, 2, allow_nan=False))


@settings(max_examples=200)
@given(x=rows, data=st.data())
def test_exact_copies_are_always_flagged_and_the_later_row_goes(x: np.ndarray,
                                                                 data: st.DataObject) -> None:
    k = len(x)
    source = data.draw(st.integers(0, k - 1))
    copier = data.draw(st.integers(0, k - 1).filter(lambda j: j != source))
    x = x.copy()
    x[copier] = x[source]
    positions = data.draw(st.permutations(range(k)))
    pos = [(p, 0) for p in positions]
    copies = flag_copies(x, [0.3] * k, pos)
    later = copier if pos[copier] > pos[source] else source
    assert later in {c.index for c in copies}
    flagged = {c.index for c in copies}
    # Every flagged row is later than the row it copies, which is kept.
    for c in copies:
        assert pos[c.index] > pos[c.of] and c.of not in flagged


@given(x=rows)
def test_noise_free_rows_are_never_flagged(x: np.ndarray) -> None:
    """σ = 0: equal deterministic models may send equal rows."""
    x = np.vstack([x, x])
    k = len(x)
    assert flag_copies(x, [0.0] * k, [(i, 0) for i in range(k)]) == []


@given(x=rows, data=st.data())
def test_flags_do_not_depend_on_row_order(x: np.ndarray, data: st.DataObject) -> None:
    x = np.vstack([x, x[:1]])
    k = len(x)
    pos = [(i, 0) for i in range(k)]
    want = {(c.index, c.of) for c in flag_copies(x, [0.5] * k, pos)}
    perm = data.draw(st.permutations(range(k)))
    got = flag_copies(x[perm], [0.5] * k, [pos[i] for i in perm])
    assert {(perm[c.index], perm[c.of]) for c in got} == want


def test_copy_of_a_copy_names_the_original_and_near_copies_count() -> None:
    rng = np.random.default_rng(0)
    honest = rng.normal(0, 0.3, (3, 10)) + np.eye(10)[:3]
    near = honest[0] + 1e-4  # within the noise, not bit-equal
    x = np.vstack([honest, near, near])
    copies = flag_copies(x, [0.3] * 5, [(0, 0), (0, 1), (1, 0), (2, 0), (3, 0)])
    assert [(c.index, c.of) for c in copies] == [(3, 0), (4, 0)]
    assert all(c.distance2 < c.threshold2 for c in copies)


def test_suspicious_marks_exactly_the_queries_with_copies() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(0, 0.3, (50, 4, 10))
    x[[3, 17], 2] = x[[3, 17], 0]
    assert np.flatnonzero(suspicious(x, [0.3] * 4)).tolist() == [3, 17]
    for q in range(50):
        found = flag_copies(x[q], [0.3] * 4, [(i, 0) for i in range(4)])
        assert bool(found) == (q in (3, 17))


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="width"):
        chi2_lower_bound(0)
    with pytest.raises(ValueError, match="stds"):
        pair_thresholds([-1.0, 0.3], 10)
    with pytest.raises(ValueError, match="positions"):
        flag_copies(np.zeros((2, 3)), [0.1, 0.1], [(0, 0)])
    assert squared_distances(np.eye(2)).tolist() == [[0.0, 2.0], [2.0, 0.0]]


def test_the_aggregator_screen_leaves_the_copy_out_of_the_result_and_counts_it() -> None:
    from fi_stream.join import Answer, JoinTable
    from fi_stream.results import IncentiveWindow, build_result, soft_vote_in_batches
    from schemas import WindowRef

    from .test_join import EXPECTED, query

    rng = np.random.default_rng(2)
    t = JoinTable()
    t.add_query(query("a"), 0, 5, EXPECTED)
    oq = t.open["a"]
    rows = rng.normal(0, 0.3, (3, 10)).astype(np.float32)
    rows[2] = rows[0]  # p3 re-sends p1's answer, later in the log
    for offset, pid in enumerate(("p1", "p2", "p3")):
        oq.answers[pid] = Answer(pid, rows[offset], 0, 100 + offset, 0, 1)
    stds = {"p1": 0.3, "p2": 0.3, "p3": 0.3}.__getitem__
    assert not soft_vote_in_batches([oq], stds)["a"].no_copies
    copied = screen_copies(oq, stds)
    assert [(a.participant_id, of) for a, of in copied] == [("p3", "p1")]
    result, ids, _ = build_result(oq, strategy="soft_vote", completed_at_ms=2,
                                  window=WindowRef(partition=0, seq=0), copied=copied)
    assert ids == ["p1", "p2"] and result.missing == [] and result.status == "complete"
    assert [(c.participant_id, c.offset, c.copy_of) for c in result.copied] == [("p3", 102, "p1")]
    window = IncentiveWindow(0, 0, 0, "correlated_agreement")
    window.add(result, ids, np.stack([oq.answers[i].vector for i in ids]).astype(np.float64))
    counts = {i.participant_id: i.counts for i in window.close(budget=1.0)}
    assert counts["p3"].copied == 1 and counts["p3"].included == 0
