"""Differential: the block join + vectorized results against today's per-query JoinTable +
build_result, fed the same events (issue 13).

A query block at offset o is, for today's table, N queries at offsets o·ROWS + n (each
query its own record, as today, so the oldest open one maps back to o); a response
record is one ResponseBatch (its answered rows, its declined rows) at its offset. Both are
driven as the aggregator drives them (settled, then due; close what was emitted), and
after every tick the emitted results, the late-after-result counts and the three commit
marks must agree. A response record answers one or more blocks (spans); today's table
gets its view (`response_batch_of`), so included/excluded `index` (the answer's position
among the record's answered rows) must agree too. The result blocks built with numpy
(`to_result_blocks`) must give back the same Results (`results_of`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fi_stream.block_join import BlockJoinTable, exclusion_codes
from fi_stream.block_results import settle, to_result_blocks, to_results
from fi_stream.join import JoinTable
from fi_stream.results import build_result
from schemas import Privacy, Query, Tensor, WindowRef
from schemas.blocks import (
    DECLINE_CODES,
    ResponseBlock,
    decode_result_block,
    encode_result_block,
    query_block,
)
from schemas.blocks.convert import response_batch_of, results_of

POOL = ["p0", "p1", "p2", "p3", "p4"]
STRATEGIES = ["soft_vote", "hard_vote", "median", "trimmed_mean", "entropy_weighted",
              "js_consensus", "weighted", "reward_weighted"]
REASONS = [None] * 12 + ["implausible_norm", "privacy_mismatch", "non_finite"]
WINDOW = WindowRef(partition=0, seq=0)
ROWS = 64  # more than any block's N here
WEIGHTS = {"p0": 0.5, "p1": 2.0, "p3": 0.0, "p4": 1.25}


class Pair:
    """Today's table and the block table, driven alike."""

    def __init__(self) -> None:
        self.old = JoinTable()
        self.new = BlockJoinTable()
        self.emitted_old: dict[str, dict[str, Any]] = {}
        self.emitted_new: dict[str, dict[str, Any]] = {}

    def add_block(self, block: Any, offset: int, expected: frozenset[str]) -> None:
        for n, qid in enumerate(block.query_ids):
            q = Query(query_id=qid, task=block.task,
                      input=Tensor.from_numpy(block.inputs[n]),
                      created_at_ms=int(block.created_at_ms[n]),
                      deadline_ms=int(block.deadline_ms[n]), quorum=block.quorum,
                      strategy=block.strategy)
            self.old.add_query(q, 0, offset * ROWS + n, expected, results_mark=offset * 10)
        self.new.add_block(block, 0, offset, expected, results_mark=offset * 10)

    def add_response(self, resp: ResponseBlock, offset: int, now: int,
                     reasons: list[str | None]) -> None:
        row_reasons = [r for r, s in zip(reasons, resp.status.tolist(), strict=True) if s == 0]
        self.old.add_batch(response_batch_of(resp), 0, offset, now,
                           row_reasons)  # type: ignore[arg-type]
        self.new.add_response(resp, 0, offset, now, exclusion_codes(reasons))

    def tick(self, now: int) -> None:
        for oq in self.old.take_settled() + self.old.take_due(now):
            if oq.query.query_id not in self.old.open:
                continue
            strategy = oq.query.strategy or "soft_vote"
            result, _, _ = build_result(oq, strategy=strategy, completed_at_ms=now,
                                        window=WINDOW, weights=WEIGHTS)
            self.emitted_old[result.query_id] = result.model_dump()
            self.old.close(oq, now)
        for ready in self.new.take_settled() + self.new.take_due(now):
            ob = ready.block
            if ob.block_id not in self.new.open:
                continue
            rows = ready.rows & ob.open
            strategy = ob.block.strategy or "soft_vote"
            outcome = settle(ob, rows, strategy=strategy, weights=WEIGHTS)
            results = to_results(ob, outcome, strategy=strategy, completed_at_ms=now,
                                 window=WINDOW)
            blocks = to_result_blocks(ob, outcome, strategy=strategy, completed_at_ms=now,
                                      window=WINDOW)
            again = [r for b in blocks for r in results_of(
                decode_result_block(encode_result_block(b)))]
            assert sorted(again, key=lambda r: r.query_id) == sorted(
                results, key=lambda r: r.query_id)
            for result in results:
                self.emitted_new[result.query_id] = result.model_dump()
            self.new.close(ob, rows, now)

    def check(self) -> None:
        assert self.emitted_new.keys() == self.emitted_old.keys()
        for qid, want in self.emitted_old.items():
            assert self.emitted_new[qid] == want, qid
        old_query = self.old.oldest_query_offset(0)
        assert self.new.oldest_query_offset(0) == (None if old_query is None
                                                   else old_query // ROWS)
        assert (self.new.oldest_response_offset(0) == self.old.oldest_response_offset(0))
        assert self.new.oldest_results_mark(0) == self.old.oldest_results_mark(0)
        late_new = Counter()  # type: Counter[str]
        for pid, _, count in self.new.late_after_result:
            late_new[pid] += count
        assert late_new == Counter(pid for pid, _ in self.old.late_after_result)


@st.composite
def scenarios(draw: Any) -> dict[str, Any]:
    n_blocks = draw(st.integers(1, 3))
    blocks = []
    for b in range(n_blocks):
        n = draw(st.integers(1, 6))
        deadlines = draw(st.lists(st.integers(50, 400), min_size=n, max_size=n))
        blocks.append(query_block(
            f"b{b}", "digits", np.zeros((n, 2), np.float32), created_at_ms=0,
            deadline_ms=np.array(deadlines, np.int64),
            quorum=draw(st.integers(1, 3)),
            strategy=draw(st.sampled_from([None, *STRATEGIES]))))
    expected = frozenset(draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=5)))
    extra = draw(st.lists(st.sampled_from(POOL), max_size=2))  # may answer unasked
    width = draw(st.integers(1, 4))
    events: list[tuple[Any, ...]] = [("block", b) for b in range(n_blocks)]
    for b in range(n_blocks):
        answering = draw(st.lists(st.sampled_from(sorted(expected)), max_size=5)) + extra
        for pid in draw(st.permutations(answering)):  # repeats are duplicates
            # Now and then one record answers this block and a later one (several spans).
            more = [b + 1] if b + 1 < n_blocks and draw(st.booleans()) else []
            events.append(("response", [b, *more], pid))
    events += [("tick", t) for t in draw(st.lists(st.integers(0, 500), max_size=4))]
    order = draw(st.permutations(events))
    return {"blocks": blocks, "expected": expected, "width": width, "events": order,
            "seed": draw(st.integers(0, 2**31))}


def response(rng: np.random.Generator, blocks: list[Any], pid: str, width: int) -> tuple[
        ResponseBlock, list[str | None]]:
    """One participant's record answering every row of `blocks` (one span each)."""
    n = sum(len(b) for b in blocks)
    status = np.where(rng.random(n) < 0.15, rng.integers(1, len(DECLINE_CODES), n), 0)
    c = width if rng.random() < 0.9 else width + 1  # now and then a participant off width
    outputs = rng.normal(0.3, 0.4, (n, c)).astype(np.float32)
    if rng.random() < 0.1:
        outputs[rng.integers(0, n), 0] = np.nan
    if rng.random() < 0.1:
        outputs[:, 0] = -0.0
    outputs[status != 0] = 0.0
    reasons = [REASONS[i] if s == 0 else None
               for i, s in zip(rng.integers(0, len(REASONS), n).tolist(), status.tolist(),
                               strict=True)]
    produced = int(rng.integers(0, 40) if rng.random() < 0.8 else rng.integers(0, 450))
    resp = ResponseBlock(pid, f"{pid}-{blocks[0].block_id}", blocks[0].task, "1",
                         Privacy(clip_norm=1, noise_multiplier=0.1), produced, 0,
                         [(b.block_id, len(b)) for b in blocks], outputs,
                         status.astype(np.uint8))
    return resp, reasons


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_block_join_agrees_with_the_per_query_join(s: dict[str, Any]) -> None:
    rng = np.random.default_rng(s["seed"])
    pair = Pair()
    now = 0
    for offset, event in enumerate(s["events"], start=1):
        if event[0] == "block":
            pair.add_block(s["blocks"][event[1]], offset, s["expected"])
        elif event[0] == "response":
            resp, reasons = response(rng, [s["blocks"][b] for b in event[1]], event[2],
                                     s["width"])
            pair.add_response(resp, offset, now, reasons)
        else:
            now = max(now, event[1])
            pair.tick(now)
        pair.check()
    pair.tick(1000)
    pair.check()
