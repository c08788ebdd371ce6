"""Merit's edges, pinned one by one (issue 18: each test kills a mutmut survivor).

window_labels' three filters, usable_queries' shape bounds, the exact/Monte-Carlo switch at
twelve participants, the default permutation count and the per-participant counts.
"""

from __future__ import annotations

import numpy as np
import pytest
from aiokafka.structs import ConsumerRecord

from consumers.merit import MeritService
from fi_stream.audit import Logged
from fi_stream.audit.rows import RowIndex, response_views
from fi_stream.merit import LabeledQuery, merit_incentives, usable_queries, window_labels
from fi_stream.settings import load_settings
from fi_stream.testing import synthetic_log
from schemas import DecodeError, Result, Window
from schemas.blocks import ResponseBlock, decode_response_block, decode_result_block
from schemas.blocks.convert import results_of

WINDOW = Window(partition=1, seq=4, results=30, first_completed_at_ms=0, last_completed_at_ms=9)


def _queries(n_participants: int, n: int = 6, seed: int = 0) -> list[LabeledQuery]:
    rng = np.random.default_rng(seed)
    ids = [f"p{i:02d}" for i in range(n_participants)]
    return [LabeledQuery(participant_ids=ids, outputs=rng.random((n_participants, 3)),
                         label=int(rng.integers(3))) for _ in range(n)]


def test_window_labels_keep_only_the_partition_below_the_horizon_with_valid_labels() -> None:
    feedback = [
        (0, 1, "other-partition", 1),   # another partition: not this window's
        (1, 5, "at-horizon", 1),        # offset == horizon: recorded as excluded
        (1, 2, "bad-label", -1),        # not a label at all
        (1, 3, "kept", 2),
        (1, 4, "kept", 0),              # a later, conflicting label: the first wins
    ]
    assert window_labels(feedback, partition=1, horizon=5) == {"kept": 2}
    assert window_labels(feedback, partition=1, horizon=6) == {"kept": 2, "at-horizon": 1}


def test_usable_queries_bounds() -> None:
    one = LabeledQuery(participant_ids=["a"], outputs=np.array([[0.2, 0.8]]), label=1)
    one_class = LabeledQuery(participant_ids=["a", "b"], outputs=np.ones((2, 1)), label=0)
    empty = LabeledQuery(participant_ids=[], outputs=np.zeros((0, 2)), label=0)
    no_class = LabeledQuery(participant_ids=["a"], outputs=np.zeros((1, 0)), label=0)
    assert usable_queries([one, one_class, empty, no_class]) == [one, one_class]


def test_exact_up_to_twelve_participants() -> None:
    events = merit_incentives(WINDOW, _queries(12, n=3), {}, budget=1.0, feedback_horizon=0)
    assert len(events) == 12 and all(e.stderr is None for e in events)


def test_the_default_is_two_thousand_permutations() -> None:
    queries = _queries(13, n=2)
    default = merit_incentives(WINDOW, queries, {}, budget=1.0, feedback_horizon=0)
    explicit = merit_incentives(WINDOW, queries, {}, budget=1.0, feedback_horizon=0,
                                permutations=2000)
    assert [(e.score, e.stderr) for e in default] == [(e.score, e.stderr) for e in explicit]
    assert all(e.stderr is not None for e in default)


def test_included_counts_the_queries_each_participant_was_in() -> None:
    rng = np.random.default_rng(1)
    queries = [LabeledQuery(participant_ids=ids, outputs=rng.random((len(ids), 3)), label=1)
               for ids in (["a", "b"], ["a"], ["a", "c"])]
    events = merit_incentives(WINDOW, queries, {"d": 1.0}, budget=1.0, feedback_horizon=0)
    assert {e.participant_id: e.counts.included for e in events} == {
        "a": 3, "b": 1, "c": 1, "d": 0}


# -- the merit service reads blocks (issue 13) -----------------------------------------------------

def _record(topic: str, partition: int, offset: int, value: bytes, key: bytes = b"k"
            ) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(topic=topic, partition=partition, offset=offset, timestamp=0,
                          timestamp_type=0, key=key, value=value, checksum=None,
                          serialized_key_size=len(key), serialized_value_size=len(value),
                          headers=[])


def test_the_service_takes_a_result_block_row_by_row_and_its_rows_from_response_blocks(
        ) -> None:
    """A result block's results land in their window, as `results_of` gives them; the rows
    a labelled result lists resolve from the response blocks (as the audit resolves them),
    so merit scores exactly the outputs the aggregator used."""
    synthetic = synthetic_log(queries=24, participants=3, partitions=1, batch=8,
                              window_results=100, seed=3)
    service = MeritService(load_settings(None))
    topics = service.topics
    results: list[Result] = []
    blocks: list[Logged[ResponseBlock]] = []
    for rec in synthetic.records:
        if rec.topic == "results":
            service._on_results(_record(topics.results, rec.partition, len(results), rec.value))
            results.extend(results_of(decode_result_block(rec.value)))
        elif rec.topic == "responses":
            blocks.append(Logged(decode_response_block(rec.value), rec.partition, len(blocks)))
    [(key, pending)] = service._pending.items()
    assert key == (0, 0) and pending.results == results and len(results) == 24
    labels = {r.query_id: (i % 10, _record(topics.feedback, 0, i, b"{}"))
              for i, r in enumerate(results)}
    queries = service._labeled_queries(results, RowIndex(response_views(blocks)), labels)
    index = RowIndex(response_views(blocks))
    for r, q in zip(results, queries, strict=True):
        assert q.participant_ids == [a.participant_id for a in r.included]
        expected = index.rows(r.included)
        assert expected is not None and q.outputs.tobytes() == expected.tobytes()
    with pytest.raises(DecodeError):  # `_read` dead-letters it: not a block
        service._on_results(_record(topics.results, 0, 99, b'{"query_id": "q"}'))
