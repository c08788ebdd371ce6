"""scikit-learn's digits (shipped with the package, nothing downloaded) and non-IID shards.

Digits is small enough to train a participant in about a second on a CPU, yet has ten
classes, which is what a label-skewed federation needs to show that models trained on
different classes complement each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from fi_stream.errors import ConfigError

MIN_SHARD = 10
"""Fewer samples than this and a participant's model is noise, not a skewed expert."""


@dataclass(frozen=True)
class DigitsSplit:
    """Inputs are float32 in [0, 1] (pixel counts / 16), labels int64, as torch expects."""

    x_train: npt.NDArray[np.float32]
    y_train: npt.NDArray[np.int64]
    x_test: npt.NDArray[np.float32]
    y_test: npt.NDArray[np.int64]


def load_digits_split(seed: int = 0, test_size: float = 0.2) -> DigitsSplit:
    """One fixed, stratified held-out split (360 test samples by default).

    Every participant, the demo and the tests call this with the defaults, so all
    accuracies in the project are measured on the same samples and none is trained on.
    """
    if not 0.0 < test_size < 1.0:
        raise ConfigError(f"test_size must be in (0, 1), got {test_size}")
    digits = load_digits()
    x = (np.asarray(digits.data) / 16.0).astype(np.float32)
    y = np.asarray(digits.target).astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, random_state=seed,
                                              stratify=y)
    return DigitsSplit(x_tr, y_tr, x_te, y_te)


def dirichlet_shards(labels: npt.NDArray[np.int64], n: int, alpha: float,
                     rng: np.random.Generator, *, max_tries: int = 1000
                     ) -> list[npt.NDArray[np.int64]]:
    """Label-Dirichlet(α) partition of range(len(labels)) into n disjoint, sorted shards.

    Each class is split across shards by proportions drawn from Dir(α·1): small α gives
    each shard a few dominant classes (the non-IID setting of the FL literature), large α
    tends to IID. A draw is redone until every shard has ≥ MIN_SHARD samples, since a
    near-empty shard would make a participant that can only guess.
    """
    if n < 1 or not alpha > 0:
        raise ConfigError(f"need n ≥ 1 shards and α > 0, got n={n}, α={alpha}")
    if len(labels) < n * MIN_SHARD:
        raise ConfigError(
            f"{len(labels)} samples cannot give {n} shards of ≥ {MIN_SHARD}; use fewer shards")
    classes = np.unique(labels)
    for _ in range(max_tries):
        parts: list[list[npt.NDArray[np.int64]]] = [[] for _ in range(n)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(n, alpha)))[:-1] * len(idx)).astype(int)
            for k, part in enumerate(np.split(idx, cuts)):
                parts[k].append(part)
        shards = [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]
        if min(len(s) for s in shards) >= MIN_SHARD:
            return shards
    raise ConfigError(
        f"no draw in {max_tries} gave {n} shards of ≥ {MIN_SHARD} samples at α={alpha}; "
        "raise α or use fewer shards")
