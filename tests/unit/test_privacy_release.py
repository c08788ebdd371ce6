"""The release step's fast paths (issue 13) compute the same function as the plain one:
softmax over short rows on the transposed view, clip_rows' early return when no row needs
clipping, and the noise added in place on its own buffer."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fi_stream.privacy import Mechanism, clip_rows, privatize, release, softmax_rows

logits = arrays(np.float32, st.tuples(st.integers(1, 64), st.sampled_from([1, 2, 10, 15, 16, 40])),
                elements=st.floats(-50, 50, width=32))


@given(logits)
def test_softmax_rows_is_torch_softmax(x: np.ndarray) -> None:
    t = torch.from_numpy(x)
    fast = softmax_rows(t)
    assert fast.is_contiguous() and fast.shape == t.shape
    assert torch.allclose(fast, torch.softmax(t, dim=-1), rtol=1e-5, atol=1e-7)


@given(logits, st.floats(0.05, 2.0))
def test_release_without_noise_is_the_clipped_softmax(x: np.ndarray, c: float) -> None:
    t = torch.from_numpy(x)
    out = release(t, Mechanism(clip_norm=c, noise_multiplier=0.0), torch.Generator())
    assert torch.allclose(out, clip_rows(torch.softmax(t, dim=-1), c), rtol=1e-5, atol=1e-7)


def test_clip_rows_returns_a_fresh_tensor_when_nothing_is_clipped() -> None:
    x = torch.tensor([[0.3, 0.4], [0.1, 0.0]])
    out = clip_rows(x, 1.0)
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()
    out += 1  # the caller may write to it
    assert torch.equal(x, torch.tensor([[0.3, 0.4], [0.1, 0.0]]))


def test_noise_is_clipped_plus_sigma_c_times_the_generator_draw() -> None:
    """The in-place form draws exactly what torch.randn draws and scales it by σ·C: the
    noise law is N(0, (σC)²) from the given generator, unchanged by the rewrite."""
    mech = Mechanism(clip_norm=0.5, noise_multiplier=0.7)
    x = torch.rand(32, 10, generator=torch.Generator().manual_seed(0)) * 3
    clipped = clip_rows(x, 0.5)
    draw = torch.randn(clipped.shape, generator=torch.Generator().manual_seed(9))
    out = privatize(x, mech, torch.Generator().manual_seed(9))
    assert torch.equal(out, clipped + draw * mech.noise_std)
    assert torch.equal(x, torch.rand(32, 10, generator=torch.Generator().manual_seed(0)) * 3)
