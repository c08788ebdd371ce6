"""`loo_median_agreement`: a robust peer reference; and, for every label-free method with
a batched path, `add_batch` + `add` leaves the very state `add` alone does."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fi_stream.incentives import METHODS, BatchedMethod, loo_agreement, window_scores
from fi_stream.incentives.loo_median_agreement import loo_median_agreement
from fi_stream.settings import AggregatorSettings

stacks = arrays(np.float64, st.tuples(st.integers(1, 8), st.integers(1, 5), st.integers(1, 4)),
                elements=st.floats(-1, 2, allow_nan=False))
BATCHED = sorted(n for n, m in METHODS.items() if isinstance(m, BatchedMethod))


def test_one_extreme_peer_cannot_turn_the_reference_against_the_honest() -> None:
    honest = [[0.8, 0.2], [0.7, 0.3], [0.75, 0.25]]
    x = np.array([*honest, [-100.0, 100.0]])
    # The mean of the others flips to class 1 for every honest participant...
    assert loo_agreement(x).tolist() == [0.0, 0.0, 0.0, 0.0]
    # ...their geometric median does not: the honest agree, the extreme one does not.
    assert loo_median_agreement(x).tolist() == [1.0, 1.0, 1.0, 0.0]


def test_it_is_registered_and_a_valid_setting() -> None:
    assert "loo_median_agreement" in METHODS
    assert AggregatorSettings(incentive_method="loo_median_agreement").incentive_method \
        == "loo_median_agreement"
    ids = ["a", "b", "c", "d"]
    x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.8, 0.2]])
    assert window_scores([(ids, x), (ids, x)], "loo_median_agreement") == {
        "a": 2.0, "b": 2.0, "c": 0.0, "d": 2.0}


def test_some_methods_have_a_batched_path() -> None:
    assert {"loo_agreement", "correlated_agreement"} <= set(BATCHED)


@pytest.mark.parametrize("method", BATCHED)
@given(x=stacks)
def test_batched_and_per_query_paths_give_the_same_state(method: str, x: np.ndarray) -> None:
    m = METHODS[method]
    assert isinstance(m, BatchedMethod)
    ids = [f"p{i}" for i in range(x.shape[1])]
    fast, slow = m.initialize(), m.initialize()
    for q, pre in enumerate(m.add_batch(x)):
        m.add(fast, ids, x[q], pre)
        m.add(slow, ids, x[q])
    assert orjson.dumps(fast) == orjson.dumps(slow)
    assert m.close(fast) == m.close(slow)
