"""README claims on the real broker that no test held (issue 18): a query naming its own
strategy, answers after their result counted in `counts.late`, an unknown participant's
answers dead-lettered."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest

from fi_stream.clock import now_ms
from fi_stream.kafka import ensure_topics
from fi_stream.settings import Settings
from schemas import Incentive, decode
from schemas.blocks import QueryBlockHeader, block_headers, split_query_id

from .harness import HandParticipant, federation, query_value, read_topic, registered, results_in

pytestmark = pytest.mark.kafka

X = np.zeros(64, np.float32)


async def _hands(settings: Settings, *ids: str) -> list[HandParticipant]:
    hands = [HandParticipant(settings, pid) for pid in ids]
    for h in hands:
        await h.register()
    await registered(settings, set(ids))
    return hands


async def _query(h: HandParticipant, qid: str, *, deadline_in: int = 60_000,
                 quorum: int = 1, strategy: str | None = None) -> None:
    """Query `qid` (`B.0`): a block of one."""
    now = now_ms()
    block_id, _ = split_query_id(qid)
    value = query_value(block_id, X, created_at_ms=now, deadline_ms=now + deadline_in,
                        quorum=quorum, strategy=strategy)
    await h.produce_raw(h.settings.topic_names.queries, value, key=block_id, partition=0,
                        hdrs=block_headers(QueryBlockHeader))


async def test_a_query_names_its_own_strategy(topics: Settings) -> None:
    t = topics.topic_names
    h1, h2, h3 = await _hands(topics, "h1", "h2", "h3")
    async with federation(topics, {}) as fed:
        await fed.aggregator.registry.wait_for({"h1", "h2", "h3"}, timeout=20)
        for qid, strategy in (("s-median.0", "median"), ("s-default.0", None),
                              ("s-unknown.0", "no_such_rule")):
            await _query(h1, qid, strategy=strategy)
            # h1 and h2 say 3, h3 says 5: median → one-hot 3, soft vote → 2/3 on 3.
            for h, cls in ((h1, 3), (h2, 3), (h3, 5)):
                await h.produce_raw(t.responses, h.batch(0, {qid: cls}), key=h.participant_id,
                                    partition=0)
        records = await read_topic(topics, t.results, min_records=3)
    results = {r.query_id: r for r in results_in(records)}
    assert results["s-median.0"].strategy == "median"
    assert results["s-median.0"].aggregate is not None
    assert results["s-median.0"].aggregate.to_numpy()[3] == 1.0
    # None, or a rule the aggregator does not know: the configured one (soft_vote).
    assert results["s-default.0"].strategy == results["s-unknown.0"].strategy == "soft_vote"
    assert results["s-default.0"].aggregate is not None
    assert results["s-default.0"].aggregate.to_numpy()[3] == pytest.approx(2 / 3)


async def test_an_unknown_participants_answer_goes_to_the_dlq(topics: Settings) -> None:
    t = topics.topic_names
    [h1] = await _hands(topics, "h1")
    ghost = HandParticipant(topics, "ghost")  # never registered
    async with federation(topics, {}) as fed:
        await fed.aggregator.registry.wait_for({"h1"}, timeout=20)
        await _query(h1, "u-1.0")
        await ghost.produce_raw(t.responses, ghost.batch(0, {"u-1.0": 4}), key="ghost",
                                partition=0)
        await h1.produce_raw(t.responses, h1.batch(0, {"u-1.0": 2}), key="h1", partition=0)
        [record] = await read_topic(topics, t.results, min_records=1)
        dead = await read_topic(topics, t.dlq, min_records=1)
    [result] = results_in([record])
    assert [a.participant_id for a in result.included] == ["h1"] and result.prediction == 2
    assert [dict(r.headers)["error"] for r in dead] == [b"unknown_participant"]


async def test_answers_after_their_result_are_counted_late(
        settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory(aggregator={"window_results": 1000, "window_seconds": 4.0})
    await ensure_topics(settings)
    t = settings.topic_names
    h1, h2 = await _hands(settings, "h1", "h2")
    async with federation(settings, {}) as fed:
        await fed.aggregator.registry.wait_for({"h1", "h2"}, timeout=20)
        await _query(h1, "late-1.0", deadline_in=1_000)
        await h1.produce_raw(t.responses, h1.batch(0, {"late-1.0": 1}), key="h1", partition=0)
        [record] = await read_topic(settings, t.results, min_records=1)  # partial, at deadline
        [result] = results_in([record])
        assert result.status == "partial" and result.missing == ["h2"]
        await h2.produce_raw(t.responses, h2.batch(0, {"late-1.0": 1}), key="h2", partition=0)
        incentives = await read_topic(settings, t.incentives, min_records=2, timeout=30)
        await asyncio.sleep(0)
    counts = {i.participant_id: i.counts for i in (decode(r.value, Incentive)
                                                    for r in incentives)}
    assert counts["h2"].late == 1 and counts["h2"].missing == 1
    assert counts["h1"].included == 1 and counts["h1"].late == 0
