"""scikit-learn's digits (shipped with the package, nothing downloaded) and non-IID shards."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from fi_stream.errors import ConfigError

MIN_SHARD = 10


@dataclass(frozen=True)
class DigitsSplit:
    x_train: npt.NDArray[np.float32]
    y_train: npt.NDArray[np.int64]
    x_test: npt.NDArray[np.float32]
    y_test: npt.NDArray[np.int64]


def load_digits_split(seed: int = 0, test_size: float = 0.2) -> DigitsSplit:
    """One fixed, stratified held-out split shared by every participant (360 test samples)."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, random_state=seed,
                                              stratify=y)
    return DigitsSplit(x_tr, y_tr, x_te, y_te)


def dirichlet_shards(labels: npt.NDArray[np.int64], n: int, alpha: float,
                     rng: np.random.Generator, max_tries: int = 1000
                     ) -> list[npt.NDArray[np.int64]]:
    """Label-Dirichlet(α) partition into n disjoint shards covering every index.

    Each class is split across shards by proportions drawn from Dir(α): small α gives
    each shard few classes (non-IID). Redrawn until every shard has ≥ MIN_SHARD samples.
    """
    if n < 1 or alpha <= 0:
        raise ConfigError(f"need n ≥ 1 and α > 0, got n={n}, α={alpha}")
    classes = np.unique(labels)
    for _ in range(max_tries):
        shards: list[list[int]] = [[] for _ in range(n)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(n, alpha)))[:-1] * len(idx)).astype(int)
            for k, part in enumerate(np.split(idx, cuts)):
                shards[k].extend(part.tolist())
        if min(len(s) for s in shards) >= MIN_SHARD:
            return [np.sort(np.asarray(s, dtype=np.int64)) for s in shards]
    raise ConfigError(f"could not draw {n} shards with ≥ {MIN_SHARD} samples at α={alpha}")
