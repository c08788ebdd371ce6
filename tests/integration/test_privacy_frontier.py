"""One cell of the privacy–utility frontier through the live pipeline on the real broker:
five teacher-ensemble participants (K = 16, α = 1) at the default budget, ε = 100 for
1,000 answers, answer the digits test split; the federated accuracy matches what
`fi-stream experiment privacy` computes offline for the same models, and the auditor,
replaying the log, recomputes each participant's spend with the one ε function."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from consumers.auditor import Auditor
from fi_stream.experiment import Federation, release_and_aggregate
from fi_stream.kafka import ensure_topics
from fi_stream.models import load_digits_split, load_model, save_model
from fi_stream.models.train import train_teachers
from fi_stream.privacy import Mechanism, epsilon, noise_multiplier_for
from fi_stream.settings import Settings
from producers.query_client import QueryClient

from .harness import federation

pytestmark = pytest.mark.kafka

K, ALPHA, EPSILON, ANSWERS, DELTA = 16, 1.0, 100.0, 1000, 1e-5


@pytest.fixture(scope="module")
def teacher_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("teachers")
    dirs = {}
    for shard in range(5):
        pid = f"t{shard + 1}"
        module, spec = train_teachers(shard=shard, of=5, alpha=ALPHA, seed=0, teachers=K,
                                      participant_id=pid)
        save_model(root / pid, module, spec)
        dirs[pid] = root / pid
    return dirs


async def test_a_teacher_federation_at_the_default_budget_matches_the_frontier(
        settings_factory: Callable[..., Settings], teacher_dirs: dict[str, Path]) -> None:
    # The default privacy settings: σ solved so that 1,000 answers cost ε = 100.
    settings = settings_factory(privacy={"noise_multiplier": None, "epsilon_max": EPSILON,
                                         "budget_answers": ANSWERS, "delta": DELTA})
    await ensure_topics(settings)
    split = load_digits_split()
    sigma = noise_multiplier_for(EPSILON, ANSWERS, DELTA, name="teachers", teachers=K)
    mechanism = Mechanism(name="teachers", noise_multiplier=sigma, teachers=K)

    correct = 0
    async with federation(settings, teacher_dirs) as fed, \
            QueryClient(settings, quorum=5) as client:
        assert {p.engine.mechanism for p in fed.participants.values()} == {mechanism}
        async for i, _, result in client.stream(split.x_test, deadline_ms=60_000):
            assert result.status == "complete"
            correct += result.prediction == split.y_test[i]
        # A repeated input: the same noised answers again, at no cost.
        spent = {pid: p.ledger.spend[mechanism] for pid, p in fed.participants.items()}
        again = await client.infer(split.x_test[0], deadline_ms=60_000)
        await asyncio.sleep(0.2)
        assert {pid: p.ledger.spend[mechanism] for pid, p in fed.participants.items()} == spent
        assert all(p.reused == 1 for p in fed.participants.values())
        ledgers = {pid: p.ledger.epsilon for pid, p in fed.participants.items()}
    assert again.status == "complete"
    live = correct / len(split.y_test)

    # Offline, as the experiment computes the cell: same models, same release, same vote.
    x = torch.from_numpy(split.x_test)
    scores = []
    for directory in teacher_dirs.values():
        module, _ = load_model(directory)
        with torch.inference_mode():
            scores.append(module(x))
    offline = [release_and_aggregate(Federation(scores, []), mechanism,
                                     torch.Generator().manual_seed(s), split.y_test)[0]
               for s in range(5)]
    assert live >= 0.70  # the goal at ε ≤ 100 per 1,000 answers, α = 1
    assert abs(live - float(np.mean(offline))) <= 0.06, (live, offline)

    report = await Auditor(settings, merit=False).run()
    assert not [d for d in report.discrepancies if d.kind == "budget_exceeded"]
    by_id = {s.participant_id: s for s in report.spend}
    for pid in teacher_dirs:
        s = by_id[pid]
        assert s.answers == len(split.y_test) and s.reused == 1
        assert s.mechanisms == [mechanism.describe()]
        assert s.epsilon == epsilon({mechanism: s.answers}, DELTA) <= EPSILON
        assert s.epsilon <= ledgers[pid]  # the ledger also counts its reservation ahead
