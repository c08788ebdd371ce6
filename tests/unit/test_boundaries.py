"""Boundaries and details the mutation probe of issue 18 found untested: each test here
fails on one of its hand mutations (tests/mutations/hand_mutations.py applies them)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from fi_stream.aggregation import spectral_weights
from fi_stream.incentives import spearman
from fi_stream.join import Answer, JoinTable, OpenQuery
from fi_stream.merit import LabeledQuery, merit_incentives
from fi_stream.results import IncentiveWindow, build_result, soft_vote_in_batches, status_of
from schemas import Feedback, Privacy, Query, ResponseBatch, Tensor, Window, WindowRef

# -- spectral weights: a tied top eigenvalue gives the uniform answer -------------------------


def test_spectral_tie_gives_uniform_weights() -> None:
    # Covariance diag(1, 1): the top eigenvalue is tied, any unit vector of the plane is an
    # eigenvector; LAPACK returns e2 here, which without the tie rule puts all weight on p2.
    c = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    assert np.allclose(spectral_weights(c), [0.5, 0.5])


# -- join: an answer produced exactly at the deadline is on time ------------------------------


def _query(qid: str = "a", deadline: int = 1000, quorum: int = 1) -> Query:
    return Query(query_id=qid, task="digits", input=Tensor.from_numpy(np.zeros(4, np.float32)),
                 created_at_ms=0, deadline_ms=deadline, quorum=quorum)


def _batch(pid: str, produced_at: int) -> ResponseBatch:
    return ResponseBatch(
        participant_id=pid, batch_id=f"{pid}-b", task="digits", model_version="1",
        privacy=Privacy(clip_norm=1, noise_multiplier=0), produced_at_ms=produced_at,
        query_partition=0, answered=["a"],
        outputs=Tensor.from_numpy(np.eye(1, 10, dtype=np.float32)))


def test_answer_at_the_deadline_counts_and_one_after_is_late() -> None:
    t = JoinTable()
    t.add_query(_query(deadline=1000), 0, 5, frozenset({"p1", "p2"}))
    t.add_batch(_batch("p1", 1000), 0, 10, now_ms=1000)
    t.add_batch(_batch("p2", 1001), 0, 11, now_ms=1001)
    oq = t.open["a"]
    assert set(oq.answers) == {"p1"} and oq.late == {"p2"}


# -- results: late answers make a result partial ----------------------------------------------


def _open(answers: dict[str, int], late: set[str] = frozenset(),  # type: ignore[assignment]
          expected: set[str] | None = None, quorum: int = 1) -> OpenQuery:
    oq = OpenQuery(query=_query(quorum=quorum), partition=0, offset=1,
                   expected=frozenset(expected or set(answers) | set(late)))
    for i, (pid, cls) in enumerate(sorted(answers.items())):
        oq.answers[pid] = Answer(pid, np.eye(1, 10, k=cls, dtype=np.float32)[0], 0, 10 + i, 0, 5)
    oq.late |= late
    return oq


def test_status_counts_late_answers_as_not_there() -> None:
    assert status_of(2, 1, 0) == "complete" and status_of(2, 1, 1) == "partial"
    assert status_of(0, 1, 0) == "insufficient"
    result, _, _ = build_result(_open({"p1": 3, "p2": 3}, late={"p3"}), strategy="soft_vote",
                                completed_at_ms=9, window=WindowRef(partition=0, seq=0))
    assert result.late == ["p3"] and result.missing == [] and result.status == "partial"


# -- incentives: batched scores are loo_agreement's only ---------------------------------------


def test_batched_scores_are_used_only_for_loo_agreement() -> None:
    oq = _open({"p1": 3, "p2": 3, "p3": 5})
    batched = soft_vote_in_batches([oq])[oq.query.query_id]
    result, ids, outputs = build_result(oq, strategy="soft_vote", completed_at_ms=9,
                                        window=WindowRef(partition=0, seq=0), batched=batched)
    with_batch = IncentiveWindow(partition=0, seq=0, opened_at_ms=0, method="equal_split")
    with_batch.add(result, ids, outputs, batched)
    plain = IncentiveWindow(partition=0, seq=0, opened_at_ms=0, method="equal_split")
    plain.add(result, ids, outputs)
    assert with_batch.state == plain.state
    assert with_batch.state == pytest.approx({"p1": 1 / 3, "p2": 1 / 3, "p3": 1 / 3})


# -- merit: ρ and F are the label-free rewards against merit -----------------------------------


def test_merit_rank_correlation_and_fairness_compare_label_free_rewards_with_merit() -> None:
    # p1 always right, p2 right half the time, p3 always wrong: merit p1 > p2 > p3.
    eye = np.eye(10)
    queries = [LabeledQuery(participant_ids=["p1", "p2", "p3"],
                            outputs=np.stack([eye[lbl], eye[lbl if k % 2 else 9 - lbl],
                                              eye[9 - lbl]]), label=lbl)
               for k, lbl in enumerate([0, 1, 2, 3])]
    window = Window(partition=0, seq=0, results=4, first_completed_at_ms=0,
                    last_completed_at_ms=1)
    rewards = {"p1": 10.0, "p2": 30.0, "p3": 60.0}  # exactly backwards
    got = {i.participant_id: i for i in merit_incentives(window, queries, rewards, budget=100,
                                                         feedback_horizon=7)}
    phi = {p: got[p].score for p in got}
    assert phi["p1"] > phi["p2"] > phi["p3"]
    assert got["p1"].rank_correlation == pytest.approx(-1.0)
    assert got["p1"].rank_correlation == pytest.approx(spearman(rewards, phi))
    assert got["p1"].skill_fairness is not None and got["p1"].skill_fairness < 0.9
    assert {i.labeled for i in got.values()} == {4}
    assert {i.feedback_horizon for i in got.values()} == {7}


# -- ids: the pattern is enforced ------------------------------------------------------------


@pytest.mark.parametrize("bad", ["has space", "semi;colon", "new\nline", "q-1\n", "é", ""])
def test_ids_outside_the_pattern_are_rejected(bad: str) -> None:
    with pytest.raises(ValidationError):
        _query(qid=bad)
    with pytest.raises(ValidationError):
        Feedback(query_id=bad, label=1, created_at_ms=0)
