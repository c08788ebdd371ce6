"""The `geometric_median` strategy: in the rows' bounding box (their convex hull lies
inside it), indifferent to row order, robust to a minority of arbitrary rows, and
registered so settings and `aggregate` accept it."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fi_stream.aggregation import aggregate
from fi_stream.settings import AggregatorSettings
from fi_stream.strategies.geometric_median import geometric_median

rows = arrays(np.float64, st.tuples(st.integers(1, 7), st.integers(1, 6)),
              elements=st.floats(-2, 2, allow_nan=False))


@given(rows)
def test_it_lies_within_the_rows_bounding_box(x: np.ndarray) -> None:
    m = geometric_median(x)
    slack = 1e-12 * max(1.0, float(np.abs(x).max()))
    assert (m >= x.min(axis=0) - slack).all() and (m <= x.max(axis=0) + slack).all()


@given(rows, st.randoms(use_true_random=False))
def test_row_order_does_not_matter(x: np.ndarray, rnd: object) -> None:
    order = list(range(len(x)))
    rnd.shuffle(order)  # type: ignore[attr-defined]
    np.testing.assert_allclose(geometric_median(x[order]), geometric_median(x), atol=1e-6)


@given(arrays(np.float64, st.tuples(st.integers(3, 6), st.integers(2, 5)),
              elements=st.floats(-0.1, 0.1, allow_nan=False)),
       arrays(np.float64, st.integers(2, 5), elements=st.floats(-1e6, 1e6, allow_nan=False)))
def test_one_outlier_cannot_drag_it_out_of_the_honest_ball(honest: np.ndarray,
                                                           outlier: np.ndarray) -> None:
    """h honest rows within r of their centre c and one row anywhere: the median stays
    within r / √(1 − (1/h)²) of c (the mean moves by ‖outlier − c‖ / (h + 1))."""
    width = min(honest.shape[1], len(outlier))
    honest, outlier = honest[:, :width], outlier[:width]
    c = honest.mean(axis=0)
    r = float(np.sqrt(((honest - c) ** 2).sum(axis=1)).max())
    h = len(honest)
    m = geometric_median(np.vstack([honest, outlier]))
    bound = r / math.sqrt(1 - (1 / h) ** 2)
    assert float(np.sqrt(((m - c) ** 2).sum())) <= bound * 1.01 + 1e-6


def test_it_is_a_registered_strategy_and_a_valid_setting() -> None:
    x = np.array([[0.9, 0.1], [0.8, 0.2], [0.85, 0.15], [-50.0, 60.0]])
    robust = aggregate(x, "geometric_median")
    assert robust.prediction == 0 and aggregate(x, "soft_vote").prediction == 1
    assert AggregatorSettings(strategy="geometric_median").strategy == "geometric_median"


def test_identical_rows_and_a_single_row_are_their_own_median() -> None:
    x = np.array([[0.2, 0.8]] * 3)
    assert geometric_median(x).tolist() == [0.2, 0.8]
    assert geometric_median(x[:1]).tolist() == [0.2, 0.8]
