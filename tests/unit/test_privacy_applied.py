"""The clip bound at its edge and the engine's output as published (issue 18).

`test_privacy.py` draws values across ±3.4e38, which never lands near C: a clip that let
rows up to 1.5·C through survived it. Here rows are drawn with norms around C, and the
engine (the participant's real compute path) is checked row by row against
clip(softmax(model(x))) + noise.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fi_stream.engine import InferenceEngine
from fi_stream.models import ModelSpec, build
from fi_stream.privacy import Mechanism, clip_rows

SPEC = ModelSpec(architecture="digits-mlp", task="digits", version="1", input_shape=(64,),
                 num_classes=10)

directions = arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 12)),
                    elements=st.floats(-1, 1, allow_nan=False)).filter(
    lambda a: bool((np.abs(a).max(axis=1) > 1e-3).all()))


@given(directions, st.floats(0.5, 2.0), st.floats(1e-3, 1e3))
def test_rows_near_the_bound_are_clipped_to_it(d: np.ndarray, scale: float, c: float) -> None:
    """Rows of norm scale·C for scale in [0.5, 2]: just inside stays, just above → C."""
    rows = d / np.linalg.norm(d, axis=1, keepdims=True) * (scale * c)
    clipped = clip_rows(torch.from_numpy(rows.astype(np.float32)), c).double().numpy()
    norms = np.linalg.norm(clipped, axis=1)
    assert bool((norms <= c * (1 + 1e-5)).all())
    if scale > 1 + 1e-4:
        assert np.allclose(norms, c, rtol=1e-4)  # clipped onto the sphere, not inside it


def test_a_row_a_hair_above_the_bound_is_clipped() -> None:
    for c in (0.1, 1.0, 7.0):
        x = torch.tensor([[0.6, 0.8]], dtype=torch.float32) * (c * 1.001)
        assert float(torch.linalg.vector_norm(clip_rows(x, c))) <= c * (1 + 1e-6)


def _engine(sigma: float, clip: float) -> InferenceEngine:
    torch.manual_seed(0)
    return InferenceEngine(build(SPEC), SPEC,
                           Mechanism(clip_norm=clip, noise_multiplier=sigma),
                           torch.device("cpu"))


def _clean(engine: InferenceEngine, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        probs = torch.softmax(engine.module(torch.from_numpy(x)).float(), dim=-1)
    out: np.ndarray = clip_rows(probs, engine.mechanism.clip_norm).double().numpy()
    return out


X = np.random.default_rng(0).random((2000, 64), dtype=np.float32) * 16


@settings(deadline=None, max_examples=10)
@given(st.sampled_from([0.05, 0.3, 0.9]))
def test_engine_without_noise_publishes_the_clipped_output(clip: float) -> None:
    engine = _engine(0.0, clip)
    out = engine.infer(X[:64]).astype(np.float64)
    assert np.allclose(out, _clean(engine, X[:64]), atol=1e-6)
    assert bool((np.linalg.norm(out, axis=1) <= clip * (1 + 1e-5)).all())


def test_engine_noise_is_sigma_times_c_and_never_absent() -> None:
    sigma, clip = 0.4, 0.25
    engine = _engine(sigma, clip)
    out = engine.infer(X).astype(np.float64)
    noise = out - _clean(engine, X)
    n = noise.size  # 20,000 coordinates: s/σ known to 1/√(2n) = 0.5 %
    assert abs(float(noise.std()) / (sigma * clip) - 1) < 6 / math.sqrt(2 * n)
    assert abs(float(noise.mean())) < 6 * sigma * clip / math.sqrt(n)
    assert not bool(np.isclose(out, _clean(engine, X), atol=1e-6).all(axis=1).any())
    # Two calls draw fresh noise (a fixed seed would repeat it and leak the clean output).
    assert not np.array_equal(engine.infer(X[:8]), engine.infer(X[:8]))


# -- survivors of `make mutation` on fi_stream.privacy (boundaries and messages) ----------------


def test_budget_bounds_and_their_messages() -> None:
    import pytest

    from fi_stream.errors import PrivacyError
    from fi_stream.privacy import Mechanism, PrivacyBudget, answers_that_fit

    assert PrivacyBudget(epsilon_max=0.5, delta=1e-5).epsilon_max == 0.5  # ε below 1 is fine
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(PrivacyError, match=r"epsilon_max must be > 0.*privacy\.epsilon_max"):
            PrivacyBudget(epsilon_max=bad, delta=1e-5)
    with pytest.raises(PrivacyError, match=r"delta must be in \(0, 1\)"):
        PrivacyBudget(epsilon_max=1.0, delta=1.0)
    with pytest.raises(PrivacyError, match="spent answers and wanted must be >= 0"):
        answers_that_fit({}, Mechanism(noise_multiplier=1.0), -1,
                         PrivacyBudget(epsilon_max=1.0, delta=1e-5))
