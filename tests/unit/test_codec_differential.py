"""One decoder truth: the participant's fast `decode_query_view` and the full pydantic
`decode(raw, Query)` agree on every record, valid or not (issue 18).

The generated records start from a valid Query and then break it the ways clients and
attackers do: a field removed, a field replaced by a value of another type or out of
range, an extra field, a broken tensor, an id with a trailing newline. Both decoders must
accept the same records with the same values and reject the same records for the same
reason; the fast path is only allowed to be faster.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import schemas.codec as codec
from schemas import DecodeError, Query, decode, decode_query_view


def _valid() -> dict[str, Any]:
    data = np.arange(4, dtype=np.float32).tobytes()
    return {"schema_version": 1, "query_id": "q-1", "task": "digits",
            "input": {"dtype": "<f4", "shape": [2, 2], "data": base64.b64encode(data).decode()},
            "created_at_ms": 5, "deadline_ms": 9, "quorum": 2, "strategy": "median",
            "client_id": "c"}


FIELDS = [*_valid().keys()]
TENSOR_FIELDS = ["dtype", "shape", "data"]

# JSON values that are wrong (or right) for some field in an interesting way.
ODD = st.sampled_from([
    None, True, False, 0, 1, -1, 2, 2**63, -(2**63), 1.0, 1.5, -0.0, "", "x", "q-1\n", " q",
    "a" * 128, "a" * 129, "é", [], [1], {}, {"a": 1}, "1", "<f4", "|u1", "<f8", "AAAA",
    "AAAAAAAAAAAAAAAAAAAAAA==", "not base64!", [2, 2], [4], [-1, -4], [2.0, 2.0], [True, 2],
]).map(copy.deepcopy)  # a fresh {} each draw: a shared one could end up inside itself


@st.composite
def records(draw: st.DrawFn) -> bytes:
    obj: dict[str, Any] = _valid()
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["drop", "set", "extra", "tensor_drop", "tensor_set",
                                   "tensor_extra"]))
        tensor = obj.get("input")
        if op == "drop":
            obj.pop(draw(st.sampled_from(FIELDS)), None)
        elif op == "set":
            obj[draw(st.sampled_from(FIELDS))] = draw(ODD)
        elif op == "extra":
            obj[draw(st.sampled_from(["extra", "Quorum", "signature"]))] = draw(ODD)
        elif isinstance(tensor, dict):
            if op == "tensor_drop":
                tensor.pop(draw(st.sampled_from(TENSOR_FIELDS)), None)
            elif op == "tensor_set":
                tensor[draw(st.sampled_from(TENSOR_FIELDS))] = draw(ODD)
            else:
                tensor["extra"] = draw(ODD)
    if draw(st.booleans()):
        return orjson.dumps(obj)
    return orjson.dumps(draw(st.sampled_from([obj, [obj], None, 1, "q"])))


def _outcome(decoder: Any, raw: bytes | None) -> tuple[str, Any]:
    try:
        v = decoder(raw)
    except DecodeError as exc:
        return ("reject", exc.reason)
    return ("accept", (v.query_id, v.task, v.deadline_ms, v.dtype, tuple(v.shape), v.data))


def _full(raw: bytes | None) -> Any:
    q = decode(raw, Query)
    return type("V", (), {"query_id": q.query_id, "task": q.task, "deadline_ms": q.deadline_ms,
                          "dtype": q.input.dtype, "shape": q.input.shape,
                          "data": q.input.data})


@settings(max_examples=600, deadline=None)
@given(records())
def test_fast_and_full_decoders_agree(raw: bytes) -> None:
    assert _outcome(decode_query_view, raw) == _outcome(_full, raw)


def _fast_only(raw: bytes) -> Any:
    """decode_query_view with its fallback cut off: None when the fast path declined."""
    def no_fallback(raw: bytes | None, cls: type) -> Any:
        raise LookupError("fallback")

    saved = codec.decode
    codec.decode = no_fallback  # type: ignore[assignment]
    try:
        return codec.decode_query_view(raw)
    except LookupError:
        return None
    finally:
        codec.decode = saved


@settings(max_examples=600, deadline=None)
@given(records())
def test_fast_path_alone_never_accepts_what_the_full_decoder_rejects(raw: bytes) -> None:
    """The fallback would hide a lax fast path; judge the fast path on its own."""
    view = _fast_only(raw)
    if view is not None:
        assert _outcome(_full, raw) == ("accept", (view.query_id, view.task, view.deadline_ms,
                                                   view.dtype, view.shape, view.data))


@pytest.mark.parametrize("change", [
    {"created_at_ms": None}, {"quorum": 0}, {"created_at_ms": -1}, {"strategy": 3},
    {"extra": 1}, {"query_id": "q-1\n"}, {"task": "t" * 129},
    {"client_id": 1}, {"schema_version": 2},
], ids=lambda change: "-".join(change))  # plain ids: mutmut re-runs tests by node id
def test_the_reported_disagreements_are_rejected_by_both(change: dict[str, Any]) -> None:
    """The four cases issue 18 found (and a few neighbours): full rejects, fast must too."""
    obj = _valid()
    for k, v in change.items():
        if v is None:
            del obj[k]
        else:
            obj[k] = v
    raw = orjson.dumps(obj)
    assert _outcome(_full, raw)[0] == "reject"
    assert _fast_only(raw) is None
    assert _outcome(decode_query_view, raw) == _outcome(_full, raw)


def test_the_usual_query_takes_the_fast_path() -> None:
    """Not a fallback in disguise: the common record is decoded without pydantic."""
    assert _fast_only(orjson.dumps(_valid())) is not None



def test_the_fast_path_checks_exactly_the_fields_of_query_and_tensor() -> None:
    """A field added to Query or Tensor needs its check in the fast path: until then every
    record carrying it takes the slow path (safe, but a participant decodes far fewer)."""
    from schemas import Tensor

    assert frozenset(Query.model_fields) == codec._FAST_QUERY_FIELDS == frozenset(FIELDS)
    assert frozenset(Tensor.model_fields) == codec._FAST_TENSOR_FIELDS
