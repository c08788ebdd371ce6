"""`input_problems`' whole-batch shortcut gives, row for row, the per-row answers."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fi_stream.validation import input_problems
from schemas import TaskSpec


def _per_row(flat: Any, spec: TaskSpec) -> list[str | None]:
    out: list[str | None] = []
    for row in flat:
        if not np.isfinite(row).all():
            out.append("bad_input: input contains NaN or Inf")
        elif spec.input_min is not None and float(row.min()) < spec.input_min:
            out.append(f"bad_input: input value {float(row.min()):.6g} below the task's "
                       f"minimum {spec.input_min:g}")
        elif spec.input_max is not None and float(row.max()) > spec.input_max:
            out.append(f"bad_input: input value {float(row.max()):.6g} above the task's "
                       f"maximum {spec.input_max:g}")
        else:
            out.append(None)
    return out


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5), st.integers(0, 10**6),
       st.sampled_from([None, 0.0, -1.0]), st.sampled_from([None, 1.0, 2.0]),
       st.sampled_from(["<f4", "<f8"]), st.floats(0, 1))
def test_input_problems_shortcut_is_exact(n: int, w: int, seed: int, lo: float | None,
                                          hi: float | None, dtype: str, bad: float) -> None:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-0.2, 1.2 if bad > 0.5 else 1.0, (n, w))
    if bad < 0.5:
        x = np.clip(x, 0, 1)
    if bad < 0.2:
        x[rng.integers(n), rng.integers(w)] = rng.choice([np.nan, np.inf, -np.inf])
    x = x.astype(dtype)
    spec = TaskSpec(task="t", input_shape=(w,), input_min=lo, input_max=hi, num_classes=2)
    assert input_problems(x, spec) == _per_row(x, spec)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**63 - 1), st.integers(0, 2**63 - 1)),
                min_size=1, max_size=8), st.integers(0, 10**6))
def test_deadline_problems_of_a_few_rows_as_of_many(rows: list[tuple[int, int]],
                                                    max_ms: int) -> None:
    from fi_stream.validation import _deadline_problems, deadline_problem
    near = [(c, min(c + max_ms + k, 2**63 - 1)) for c, _ in rows for k in (-1, 0, 1)]
    for pairs in (rows, near[:8]):
        created = np.array([c for c, _ in pairs], dtype=np.int64)
        deadline = np.array([d for _, d in pairs], dtype=np.int64)
        exact = [deadline_problem(c, d, max_ms) for c, d in pairs]
        assert _deadline_problems(created, deadline, max_ms) == exact
        many = np.repeat(created, 3), np.repeat(deadline, 3)
        assert _deadline_problems(*many, max_ms) == [p for p in exact for _ in range(3)]
