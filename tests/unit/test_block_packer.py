"""QueryBlockPacker: size, linger, kind changes; no query lost, none duplicated."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from producers.block_packer import PendingQuery, QueryBlockPacker


def q(i: int, task: str = "digits", dtype: str = "<f4") -> PendingQuery:
    return PendingQuery(task, np.full(4, i, dtype=dtype), i, i + 100)


def test_closes_at_max_block() -> None:
    packer = QueryBlockPacker(max_block=3, linger_ms=1000)
    assert packer.offer(q(0), 0) == [] and packer.offer(q(1), 0) == []
    (block,) = packer.offer(q(2), 0)
    assert block.query_ids == ["blk-1.0", "blk-1.1", "blk-1.2"] and len(packer) == 0
    assert block.inputs.shape == (3, 4) and block.deadline_ms.tolist() == [100, 101, 102]


def test_closes_after_linger_of_the_oldest() -> None:
    packer = QueryBlockPacker(max_block=10, linger_ms=5)
    packer.offer(q(0), 100)
    packer.offer(q(1), 103)
    assert packer.next_due_ms() == 105 and packer.due(104) == []
    (block,) = packer.due(105)
    assert block.created_at_ms.tolist() == [0, 1] and packer.next_due_ms() is None


def test_another_kind_closes_the_open_block() -> None:
    packer = QueryBlockPacker(max_block=10, linger_ms=5)
    packer.offer(q(0), 0)
    (block,) = packer.offer(q(1, task="cifar"), 0)
    assert block.task == "digits" and packer.flush()[0].task == "cifar"
    packer.offer(q(2), 0)
    assert len(packer.offer(q(3, dtype="|u1"), 0)) == 1


def test_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="max_block"):
        QueryBlockPacker(max_block=0)


@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["a", "b"])), max_size=60),
       st.integers(1, 8), st.integers(0, 4))
def test_every_query_once_in_order(steps: list[tuple[int, str]], size: int,
                                   linger: int) -> None:
    packer = QueryBlockPacker(max_block=size, linger_ms=linger)
    now, blocks = 0, []
    for i, (dt, task) in enumerate(steps):
        now += dt
        blocks += packer.due(now)
        blocks += packer.offer(q(i, task=task), now)
    blocks += packer.flush()
    rows = [int(t) for b in blocks for t in b.created_at_ms.tolist()]  # q(i): created i
    assert rows == list(range(len(steps)))
    assert all(b.query_ids == [f"{b.block_id}.{n}" for n in range(len(b))] for b in blocks)
    assert all(1 <= len(b) <= size for b in blocks)
    assert len({b.block_id for b in blocks}) == len(blocks)
