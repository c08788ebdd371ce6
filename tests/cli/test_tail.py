"""`fi-stream topics tail`: decoding and summarising records without a broker."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from aiokafka.structs import ConsumerRecord

from fi_stream.errors import ConfigError
from fi_stream.settings import load_settings
from fi_stream_cli.tail import describe, render, resolve_topic, summarise
from schemas import Query, ResponseBatch, Result
from schemas.blocks import ResponseBlock, encode_query_block, encode_response_block, query_block
from schemas.events import Privacy


def record(topic: str, value: bytes, key: bytes | None = b"k",
           headers: tuple[tuple[str, bytes], ...] = ()) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(topic=topic, partition=1, offset=42, timestamp=1_700_000_000_123,
                          timestamp_type=0, key=key, value=value, checksum=None,
                          serialized_key_size=1, serialized_value_size=len(value),
                          headers=headers)


def test_topic_names_resolve_with_the_prefix() -> None:
    s = load_settings(None, kafka={"topic_prefix": "t1."})
    assert resolve_topic(s, "results") == ("t1.fi.results", Result)
    assert resolve_topic(s, "fi.queries") == ("t1.fi.queries", Query)
    assert resolve_topic(s, "t1.fi.dlq") == ("t1.fi.dlq", None)
    with pytest.raises(ConfigError, match=r"unknown topic 'fi\.nope'; choose one of fi\.queries"):
        resolve_topic(s, "fi.nope")


def test_a_query_block_is_shown_as_one_document_with_its_buffers_summarised() -> None:
    x = np.linspace(0, 1, 64, dtype=np.float32)
    b = query_block("q-1", "digits", x[None], created_at_ms=1, deadline_ms=2,
                    strategy="median")
    doc = describe(record("fi.queries", encode_query_block(b)), Query)
    assert doc["event"]["inputs"] == "<f4 [1, 64] min 0 mean 0.5 max 1"
    assert doc["event"]["queries"] == 1 and doc["event"]["query_ids"] == ["q-1.0"]
    assert doc["time"] == "2023-11-14T22:13:20.123Z" and doc["offset"] == 42
    text = render(doc)
    assert text.splitlines()[0] == "── fi.queries [1] @42  2023-11-14T22:13:20.123Z  key k"
    assert "  inputs: <f4 [1, 64] min 0 mean 0.5 max 1" in text and "strategy: median" in text
    orjson.dumps(doc)  # the --json form is plain JSON


def test_a_response_block_counts_its_rows_by_status_and_cuts_its_ids_short() -> None:
    status = np.array([0, 0, 1, 0, 2], dtype=np.uint8)
    outputs = np.where(status[:, None] == 0, np.float32(0.1), np.float32(0)).repeat(10, 1)
    privacy = Privacy(clip_norm=1.0, noise_multiplier=0.3)
    b = ResponseBlock("p1", "batch-1", "digits", "v1", privacy, 5, 0, [("blk", 5)],
                      outputs.astype(np.float32), status, signature=b"s" * 64)
    doc = describe(record("fi.responses", encode_response_block(b)), ResponseBatch)
    event = doc["event"]
    assert event["statuses"] == {"answered": 3, "budget_exhausted": 1, "expired": 1}
    assert event["query_ids"] == ["blk.0", "blk.1", "blk.2", "… (5 ids)"]
    assert event["outputs"].startswith("<f4 [5, 10]")
    orjson.dumps(doc)


def test_a_record_that_does_not_decode_is_shown_with_why() -> None:
    doc = describe(record("fi.results", b"{not json"), Result)
    assert doc["error"].startswith("malformed")
    assert "error: malformed" in render(doc)


def test_dead_letters_show_their_headers_and_the_start_of_the_value() -> None:
    doc = describe(record("fi.dlq", b"x" * 1000, headers=(("error", b"bad_signature"),)), None)
    assert doc["headers"] == {"error": "bad_signature"}
    assert len(doc["value"]) == 301 and doc["value"].endswith("…")


def test_long_strings_are_cut_with_their_length() -> None:
    assert summarise({"signature": "A" * 88}) == {"signature": "A" * 32 + "…(88 chars)"}
    assert summarise([{"dtype": "<f4", "shape": [0], "data": ""}]) == ["<f4 [0]"]
