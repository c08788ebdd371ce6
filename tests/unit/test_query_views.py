"""`convert.query_views` (the aggregator's unvalidated per-row views) equals `queries_of`
(validated) view for view, and falls back to it (the same error) on any block whose rows
the O(1) checks cannot vouch for."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import Query
from schemas.blocks import decode_query_block, encode_query_block, query_block
from schemas.blocks.codec import QueryBlock
from schemas.blocks.convert import queries_of, query_views


def _dump(qs: list[Query]) -> list[tuple[object, ...]]:
    return [(q.model_dump(), q.model_fields_set, type(q.input.shape)) for q in qs]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.sampled_from(["<f4", "|u1", "<f2"]), st.integers(0, 9),
       st.sampled_from(["b", "blk.9", "a:b-c_d." + "x" * 100, "y" * 122]),
       st.sampled_from([None, "median"]), st.integers(1, 3), st.sampled_from([(4,), (2, 3)]))
def test_query_views_equal_the_validated_views(n: int, dtype: str, seed: int, block_id: str,
                                               strategy: str | None, quorum: int,
                                               shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(seed)
    inputs = (rng.integers(0, 17, size=(n, *shape)) if dtype == "|u1"
              else rng.normal(size=(n, *shape))).astype(dtype)
    block = decode_query_block(encode_query_block(query_block(
        block_id, "digits", inputs, created_at_ms=rng.integers(0, 2**62, n), deadline_ms=50,
        input_scale=1 / 16 if dtype == "|u1" else None, quorum=quorum, strategy=strategy,
        client_id="c")))
    fast, slow = query_views(block), queries_of(block)
    assert fast == slow
    assert _dump(fast) == _dump(slow)


@pytest.mark.parametrize("change", [
    {"block_id": "z" * 123}, {"block_id": "bad id"}, {"block_id": "b\n"}, {"task": "t\n"},
    {"task": ""}, {"quorum": 0}, {"created_at_ms": np.array([-1], dtype="<i8")},
    {"deadline_ms": np.array([-5], dtype="<i8")}, {"client_id": 7}, {"strategy": 3}])
def test_query_views_fall_back_to_the_validated_views(change: dict[str, object]) -> None:
    """Unvalidated blocks (built in code, not decoded) that would give invalid views: the
    same outcome as queries_of, error text included."""
    good = query_block("b", "digits", np.zeros((1, 4), np.float32), created_at_ms=1,
                       deadline_ms=2)
    block = QueryBlock(**{**{f: getattr(good, f) for f in good.__dataclass_fields__},
                          **change})
    try:
        expected: object = queries_of(block)
    except ValueError as exc:
        expected = str(exc)
    try:
        got: object = query_views(block)
    except ValueError as exc:
        got = str(exc)
    assert got == expected
