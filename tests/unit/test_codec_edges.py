"""The codec's edges, pinned one by one (issue 18: each test kills a mutmut survivor).

What each DecodeError of the JSON codec says (events; queries travel as blocks, whose
decoder's edges are tests/unit/test_blocks.py's).
"""

from __future__ import annotations

import base64
import re
from typing import Any

import numpy as np
import orjson
import pytest

from schemas import DecodeError, Query, decode
from schemas.codec import MAX_RECORD_BYTES


def _valid(**change: Any) -> dict[str, Any]:
    data = np.arange(4, dtype=np.float32).tobytes()
    obj: dict[str, Any] = {
        "schema_version": 1, "query_id": "q-1", "task": "digits",
        "input": {"dtype": "<f4", "shape": [2, 2], "data": base64.b64encode(data).decode()},
        "created_at_ms": 5, "deadline_ms": 9, "quorum": 2, "strategy": "median",
        "client_id": "c"}
    for k, v in change.items():
        if v is None:
            obj.pop(k)
        else:
            obj[k] = v
    return obj


@pytest.mark.parametrize(("raw", "reason", "detail"), [
    (None, "malformed", r"^record has no value \(tombstone\)$"),
    (b"{", "malformed", r"^not JSON: "),
    (b"[1]", "malformed", r"^expected a JSON object, got list$"),
    (orjson.dumps(_valid(schema_version=7)), "unsupported_version",
     r"^fi\.query/7 is not understood; this build reads fi\.query/1$"),
    (orjson.dumps(_valid(input=None)), "invalid", r"^fi\.query: input: Field required \(1 error"),
    (orjson.dumps(_valid(quorum=0)), "invalid", r"^fi\.query: quorum: "),
], ids=["tombstone", "not-json", "list", "version", "missing", "quorum"])
def test_decode_errors_name_what_is_wrong(raw: bytes | None, reason: str, detail: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode(raw, Query)
    assert info.value.reason == reason
    assert re.search(detail, info.value.detail)
    assert str(info.value) == f"{reason}: {info.value.detail}"


def test_the_size_limit_is_inclusive() -> None:
    head = orjson.dumps(_valid())
    exact = head + b" " * (MAX_RECORD_BYTES - len(head))
    assert decode(exact, Query).query_id == "q-1"
    with pytest.raises(DecodeError) as info:
        decode(exact + b" ", Query)
    assert info.value.reason == "oversized"
    assert info.value.detail == f"{MAX_RECORD_BYTES + 1} B exceeds {MAX_RECORD_BYTES} B"


def test_headers_name_the_schema_and_carry_the_trace() -> None:
    from schemas.codec import headers
    assert headers(Query) == [("content-type", b"application/json"),
                              ("fi-schema", b"fi.query/1")]
    assert headers(Query, "00-ab-cd-01")[-1] == ("traceparent", b"00-ab-cd-01")
