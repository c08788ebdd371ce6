"""The privacy–utility frontier: federated accuracy on digits against ε per 1,000 answers.

For each α (non-IID-ness), seed and mechanism, the 5 participants are trained once and
their model outputs on the shared test split computed once; then for each ε budget the
σ that spends exactly that ε in 1,000 answers is solved from the accountant, every
participant releases its outputs through `fi_stream.privacy.release` (what the engine
runs), and the aggregator's `soft_vote_batch` (what the aggregator runs) combines them.
Only the Kafka hops are missing; tests/integration/test_privacy_frontier.py runs one cell
through the live pipeline and compares.

The noise here comes from seeded generators so that a table can be reproduced; the
participant's engine seeds from the OS's CSPRNG instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from fi_stream.aggregation import soft_vote_batch
from fi_stream.models import load_digits_split, train_participant
from fi_stream.models.train import train_teachers
from fi_stream.privacy import Mechanism, MechanismName, noise_multiplier_for, release

EPSILONS: tuple[float, ...] = (10.0, 30.0, 100.0, 300.0, 1000.0)
ALPHAS: tuple[float, ...] = (0.3, 1.0)
ANSWERS = 1000
DELTA = 1e-5
PARTICIPANTS = 5
#: Chosen by `--teachers 8,16,32` runs of this experiment (README, "What ε buys").
DEFAULT_TEACHERS = 16


@dataclass(frozen=True, kw_only=True)
class Row:
    mechanism: MechanismName
    teachers: int | None
    alpha: float
    epsilon_per_1000: float
    delta: float
    sigma: float
    federated_accuracy: float  # mean over seeds
    federated_accuracy_std: float
    best_solo_accuracy: float  # best participant's own model, no noise (mean over seeds)
    best_solo_noised_accuracy: float  # best participant alone at this ε
    chance: float
    seeds: list[int]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Federation:
    """One federation's model outputs on the test split: logits (gaussian) or vote
    histograms (teachers), per participant, computed once for every ε."""

    scores: list[torch.Tensor]
    clean_solo: list[float]


def train_federation(*, alpha: float, seed: int, teachers: int | None,
                     participants: int = PARTICIPANTS) -> Federation:
    split = load_digits_split()
    x = torch.from_numpy(split.x_test)
    scores, solo = [], []
    for shard in range(participants):
        module: nn.Module
        if teachers is None:
            module, spec = train_participant(shard=shard, of=participants, alpha=alpha,
                                             seed=seed)
        else:
            module, spec = train_teachers(shard=shard, of=participants, alpha=alpha,
                                          seed=seed, teachers=teachers)
        with torch.inference_mode():
            scores.append(module.eval()(x).float())
        solo.append(spec.metrics["test_accuracy"])
    return Federation(scores, solo)


def release_and_aggregate(fed: Federation, mechanism: Mechanism, generator: torch.Generator,
                          labels: np.ndarray[Any, Any]) -> tuple[float, list[float]]:
    """Federated accuracy and each participant's accuracy on its released outputs."""
    with torch.inference_mode():
        released = [release(s, mechanism, generator).numpy() for s in fed.scores]
    stack = np.stack(released, axis=1).astype(np.float64)  # (queries, participants, classes)
    _, prediction, _ = soft_vote_batch(stack)
    solo = [float((r.argmax(1) == labels).mean()) for r in released]
    return float((prediction == labels).mean()), solo


def frontier(*, teachers: Sequence[int] = (DEFAULT_TEACHERS,),
             epsilons: Sequence[float] = EPSILONS, alphas: Sequence[float] = ALPHAS,
             seeds: Sequence[int] = (0, 1, 2), include_gaussian: bool = True,
             progress: Callable[[str], None] = lambda _: None) -> list[Row]:
    labels = load_digits_split().y_test
    setups: list[tuple[MechanismName, int | None]] = (
        [("gaussian", None)] if include_gaussian else [])
    setups += [("teachers", k) for k in teachers]
    rows = []
    for alpha in alphas:
        for name, k in setups:
            started = time.perf_counter()
            feds = {s: train_federation(alpha=alpha, seed=s, teachers=k) for s in seeds}
            progress(f"α={alpha} {name} K={k}: trained {len(seeds)} federations in "
                     f"{time.perf_counter() - started:.1f} s")
            for eps in epsilons:
                sigma = noise_multiplier_for(eps, ANSWERS, DELTA, name=name, teachers=k)
                mechanism = Mechanism(name=name, noise_multiplier=sigma, teachers=k)
                fed_acc, best_noised = [], []
                for s in seeds:
                    gen = torch.Generator().manual_seed(int(np.random.SeedSequence(
                        [s, int(eps), int(alpha * 100), k or 0]).generate_state(1)[0]))
                    acc, solo = release_and_aggregate(feds[s], mechanism, gen, labels)
                    fed_acc.append(acc)
                    best_noised.append(max(solo))
                rows.append(Row(
                    mechanism=name, teachers=k, alpha=alpha, epsilon_per_1000=eps, delta=DELTA,
                    sigma=sigma, federated_accuracy=float(np.mean(fed_acc)),
                    federated_accuracy_std=float(np.std(fed_acc)),
                    best_solo_accuracy=float(np.mean([max(feds[s].clean_solo)
                                                      for s in seeds])),
                    best_solo_noised_accuracy=float(np.mean(best_noised)),
                    chance=0.1, seeds=list(seeds)))
    return rows
