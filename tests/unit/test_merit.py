"""Merit incentives for a window: exact and Monte-Carlo Shapley, replayable."""

from __future__ import annotations

import numpy as np
import pytest

from fi_stream.merit import LabeledQuery, merit_incentives
from schemas import Window

WINDOW = Window(partition=1, seq=4, results=30, first_completed_at_ms=0, last_completed_at_ms=9)


def _queries(n_participants: int, seed: int = 0) -> list[LabeledQuery]:
    rng = np.random.default_rng(seed)
    ids = [f"p{i:02d}" for i in range(n_participants)]
    return [LabeledQuery(participant_ids=ids, outputs=rng.random((n_participants, 3)),
                         label=int(rng.integers(3))) for _ in range(30)]


def test_exact_shapley_adds_up_to_the_ensemble_accuracy() -> None:
    queries = _queries(4)
    events = merit_incentives(WINDOW, queries, {"p00": 1.0, "p01": 2.0}, budget=10.0,
                              feedback_horizon=7)
    accuracy = np.mean([q.outputs.mean(axis=0).argmax() == q.label for q in queries])
    assert sum(e.score for e in events) == pytest.approx(accuracy)
    assert all(e.stderr is None and e.labeled == 30 and e.feedback_horizon == 7 for e in events)
    assert sum(e.reward for e in events) == pytest.approx(10.0) or all(
        e.reward == 0 for e in events)
    assert {e.rank_correlation for e in events} and len({e.skill_fairness for e in events}) == 1


def test_monte_carlo_above_twelve_is_seeded_by_the_window() -> None:
    queries = _queries(13)
    a = merit_incentives(WINDOW, queries, {}, budget=1.0, feedback_horizon=0, permutations=50)
    b = merit_incentives(WINDOW, queries, {}, budget=1.0, feedback_horizon=0, permutations=50)
    assert [e.score for e in a] == [e.score for e in b]
    assert all(e.stderr is not None for e in a)


def test_no_labels_no_events() -> None:
    assert merit_incentives(WINDOW, [], {"p1": 1.0}, budget=1.0, feedback_horizon=0) == []


def test_labels_outside_the_task_are_left_out_not_a_crash() -> None:
    """Before: a label of 2**70 overflowed np.int64 in merit, which then crash-looped."""
    queries = _queries(3)
    bad = [LabeledQuery(participant_ids=q.participant_ids, outputs=q.outputs, label=label)
           for q, label in zip(queries[:3], (2**70, 3, -1), strict=True)]
    want = merit_incentives(WINDOW, queries[3:], {}, budget=10.0, feedback_horizon=7)
    got = merit_incentives(WINDOW, bad + queries[3:], {}, budget=10.0, feedback_horizon=7)
    assert [(e.participant_id, e.score) for e in got] == [
        (e.participant_id, e.score) for e in want]
