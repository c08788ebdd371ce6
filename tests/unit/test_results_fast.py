"""build_result's shortcuts (the join's per-record finiteness, the aggregate's Tensor built
unvalidated) give the very Result the checks per answer give, bytes included."""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fi_stream.join import Answer, OpenQuery
from fi_stream.results import build_result
from schemas import Query, Tensor, WindowRef, encode
from schemas.blocks import encode_result_block
from schemas.blocks.convert import result_block_of


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 5), st.sampled_from(["soft_vote", "median"]),
       st.sampled_from(["<f4", "<f8"]))
def test_known_finiteness_gives_the_same_result(seed: int, n: int, strategy: str,
                                                dtype: str) -> None:
    rng = np.random.default_rng(seed)
    q = Query(query_id="b.0", task="t", input=Tensor.from_numpy(np.zeros(2, np.float32)),
              created_at_ms=0, deadline_ms=100)
    pids = [f"p{i}" for i in range(n)]
    rows = rng.normal(size=(n, 3)).astype(dtype)
    for i in np.flatnonzero(rng.random(n) < 0.3):
        rows[i, rng.integers(3)] = rng.choice([np.nan, np.inf, -np.inf])
    flags = np.isfinite(rows).all(axis=1).tolist()

    def join(known: bool) -> OpenQuery:
        oq = OpenQuery(query=q, partition=0, offset=1, expected=frozenset(pids))
        for i, pid in enumerate(pids):
            a = Answer(pid, rows[i], 0, 5, i, 1)
            oq.answers[pid] = dataclasses.replace(a, finite=flags[i]) if known else a
        return oq

    window = WindowRef(partition=0, seq=0)
    fast, ids, _ = build_result(join(True), strategy=strategy, completed_at_ms=7,
                                window=window)
    slow, ids2, _ = build_result(join(False), strategy=strategy, completed_at_ms=7,
                                 window=window)
    assert fast == slow and ids == ids2
    assert encode(fast) == encode(slow)
    if fast.aggregate is not None:
        assert fast.aggregate == Tensor.from_numpy(fast.aggregate.to_numpy())
        assert fast.aggregate.model_fields_set == {"dtype", "shape", "data"}
    assert encode_result_block(result_block_of([fast])) == encode_result_block(
        result_block_of([slow]))
