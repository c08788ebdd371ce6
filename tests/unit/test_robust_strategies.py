"""One of five participants sends garbage: median and trimmed mean shrug it off, the mean
does not (digits test split, noised outputs as the aggregator sees them).

Measured with Dirichlet α = 1.0. At α = 0.3 every participant is the only expert on some
classes, so a coordinate-wise median or trimmed mean also discards honest minority
knowledge and loses 6–9 points against the honest ensemble even without an attacker.
"""

from __future__ import annotations

import numpy as np
import torch

from fi_stream.aggregation import aggregate
from fi_stream.models import load_digits_split, train_participant
from fi_stream.privacy import Mechanism, privatize


def _accuracy(outputs: np.ndarray, labels: np.ndarray, strategy: str) -> float:
    return float(np.mean([aggregate(o, strategy).prediction == y
                          for o, y in zip(outputs, labels, strict=True)]))


def test_median_and_trimmed_mean_resist_a_garbage_participant() -> None:
    split = load_digits_split()
    mechanism = Mechanism(clip_norm=1.0, noise_multiplier=0.3)
    rows = []
    for k in range(5):
        module, _ = train_participant(shard=k, of=5, alpha=1.0, seed=0)
        with torch.inference_mode():
            probs = torch.softmax(module(torch.from_numpy(split.x_test)), dim=1)
        rows.append(privatize(probs, mechanism, torch.Generator().manual_seed(k)).numpy())
    outputs = np.stack(rows, axis=1).astype(np.float64)  # (queries, participants, classes)
    attacked = outputs.copy()
    attacked[:, 4, :] = np.random.default_rng(0).normal(0.0, 5.0, attacked[:, 4, :].shape)

    honest = _accuracy(outputs[:, :4, :], split.y_test, "soft_vote")
    assert _accuracy(attacked, split.y_test, "median") >= honest - 0.02
    assert _accuracy(attacked, split.y_test, "trimmed_mean") >= honest - 0.02
    assert _accuracy(attacked, split.y_test, "soft_vote") < honest - 0.3
