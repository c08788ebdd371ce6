"""Blocks built and read from docs/wire-format.md alone: struct, json, bytes. The project's
block codec is used only as the thing under test (decoding what this file built, encoding
what this file reads), never to build or parse here."""

from __future__ import annotations

import hashlib
import json
import math
import struct
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ITEM = {"<f4": ("f", 4), "<f2": ("e", 2), "<f8": ("d", 8), "<i4": ("i", 4), "<i8": ("q", 8),
        "|u1": ("B", 1)}


def build(kind: int, header: dict[str, Any],
          buffers: list[tuple[str, str, list[int], list[Any]]],
          signature_space: bool = False) -> bytes:
    """The frame: prefix, JSON header, zero padding to 64, buffers at multiples of 64."""
    data, refs = b"", {}
    for name, dtype, shape, values in buffers:
        data += b"\0" * (-len(data) % 64)
        code, _ = ITEM[dtype]
        refs[name] = {"dtype": dtype, "shape": shape, "offset": len(data)}
        data += struct.pack(f"<{len(values)}{code}", *values)
    text = json.dumps({**header, **refs}).encode()
    head = b"FIBK" + struct.pack("<BBHI", 1, kind, 0, len(text)) + text
    head += b"\0" * (-len(head) % 64)
    return head + data + (b"\0" * 64 if signature_space else b"")


def read(raw: bytes) -> tuple[int, dict[str, Any], dict[str, list[Any]], bytes]:
    """(kind, header, buffer name → flat values, signature or b'')."""
    magic, version, kind, flags, length = struct.unpack_from("<4sBBHI", raw, 0)
    assert (magic, version, flags) == (b"FIBK", 1, 0)
    header = json.loads(raw[12:12 + length])
    start = -(-(12 + length) // 64) * 64
    values, end = {}, start
    for name, ref in header.items():
        if isinstance(ref, dict) and set(ref) == {"dtype", "shape", "offset"}:
            code, size = ITEM[ref["dtype"]]
            count = math.prod(ref["shape"])
            values[name] = list(struct.unpack_from(f"<{count}{code}", raw,
                                                   start + ref["offset"]))
            end = max(end, start + ref["offset"] + count * size)
    signature = raw[end:]
    assert len(signature) in (0, 64)
    return kind, header, values, signature


def test_query_block_by_hand_decodes() -> None:
    from schemas.blocks import decode_query_block

    inputs = [i % 17 for i in range(2 * 64)]  # two digits queries as pixel counts
    raw = build(1, {"schema_version": 1, "block_id": "blk-1", "task": "digits",
                    "input_scale": 0.0625, "quorum": 2},
                [("created_at_ms", "<i8", [2], [1000, 1001]),
                 ("deadline_ms", "<i8", [2], [5000, 5001]),
                 ("input", "|u1", [2, 64], inputs)])
    block = decode_query_block(raw)
    assert block.query_ids == ["blk-1.0", "blk-1.1"] and block.quorum == 2  # derived
    assert block.deadline_ms.tolist() == [5000, 5001]
    assert block.model_inputs().tolist() == (np.array(inputs).reshape(2, 64) / 16).tolist()


def test_response_block_by_hand_decodes_and_verifies() -> None:
    from fi_stream.block_signing import verify_response_block
    from fi_stream.signing import public_key_bytes
    from schemas.blocks import decode_response_block

    key = Ed25519PrivateKey.generate()
    # Record rows: block blk-1 rows 0, 1, then block blk-2 row 0. Row 1 declined (zero).
    outputs = [0.5] * 10 + [0.0] * 10 + [0.25] * 10
    unsigned = build(2, {"schema_version": 1, "participant_id": "p1", "batch_id": "x1",
                         "task": "digits", "model_version": "v1",
                         "privacy": {"clip_norm": 1.0, "noise_multiplier": 0.3,
                                     "mechanism": "gaussian"},
                         "produced_at_ms": 7, "query_partition": 0,
                         "blocks": [{"block_id": "blk-1", "rows": 2},
                                    {"block_id": "blk-2", "rows": 1}],
                         "details": [{"row": 1, "detail": "over budget"}]},
                     [("outputs", "<f4", [3, 10], outputs),
                      ("status", "|u1", [3], [0, 1, 0])],
                     signature_space=True)
    # Ed25519 over the SHA-256 digest of every byte before the signature
    raw = unsigned[:-64] + key.sign(hashlib.sha256(unsigned[:-64]).digest())
    block = decode_response_block(raw)
    assert block.reason(1) == "budget_exhausted" and block.details == {1: "over budget"}
    assert block.outputs.tolist()[0] == [0.5] * 10
    assert block.query_ids == ["blk-1.0", "blk-1.1", "blk-2.0"]
    assert verify_response_block(block, public_key_bytes(key))


def test_result_block_by_hand_gives_the_results() -> None:
    """Two rows (3 and 0) of block blk-1, participants p1, p2, p3 (sorted columns): row 3
    complete with p1 and p2 included (from two records), p3 unlisted; row 0 insufficient,
    p1 declined (budget_exhausted: 10 + 1), p2 excluded (implausible_norm: 20 + 2), p3
    late."""
    from schemas.blocks import decode_result_block
    from schemas.blocks.convert import results_of

    nan = float("nan")
    raw = build(3, {"schema_version": 1, "block_id": "blk-1", "task": "digits",
                    "strategy": "soft_vote", "quorum": 1,
                    "window": {"partition": 4, "seq": 9},
                    "participants": ["p1", "p2", "p3"],
                    "responses": [{"partition": 4, "offset": 70},
                                  {"partition": 4, "offset": 71}],
                    "reasons": [{"row": 1, "text": "nobody answered in time"}],
                    "copies": []},
                [("rows", "<i4", [2], [3, 0]), ("status", "|u1", [2], [0, 2]),
                 ("aggregate", "<f8", [2, 2], [0.25, 0.75, nan, nan]),
                 ("prediction", "<i8", [2], [1, -1]), ("confidence", "<f8", [2], [0.75, nan]),
                 ("roles", "|u1", [2, 3], [1, 1, 4, 11, 22, 2]),
                 ("response", "<i4", [2, 3], [0, 1, -1, -1, 1, -1]),
                 ("index", "<i4", [2, 3], [5, 0, -1, -1, 1, -1]),
                 ("created_at_ms", "<i8", [2], [10, 11]),
                 ("deadline_ms", "<i8", [2], [20, 21]),
                 ("completed_at_ms", "<i8", [2], [30, 30])])
    done, short = results_of(decode_result_block(raw))
    assert (done.query_id, done.status, done.prediction) == ("blk-1.3", "complete", 1)
    assert done.aggregate is not None and done.aggregate.to_numpy().tolist() == [0.25, 0.75]
    assert [(a.participant_id, a.offset, a.index) for a in done.included] == [
        ("p1", 70, 5), ("p2", 71, 0)]
    assert done.missing == done.late == [] and done.reason is None
    assert (short.query_id, short.status, short.aggregate, short.prediction) == (
        "blk-1.0", "insufficient", None, None)
    assert [(d.participant_id, d.reason) for d in short.declined] == [
        ("p1", "budget_exhausted")]
    assert [(e.participant_id, e.offset, e.index, e.reason) for e in short.excluded] == [
        ("p2", 71, 1, "implausible_norm")]
    assert short.late == ["p3"] and short.reason == "nobody answered in time"
    assert (short.window.partition, short.created_at_ms, short.completed_at_ms) == (4, 11, 30)


def test_codec_made_blocks_read_by_hand() -> None:
    from schemas import Privacy
    from schemas.blocks import (
        ResponseBlock,
        encode_query_block,
        encode_response_block,
        query_block,
    )

    x = np.arange(6, dtype=np.float32).reshape(2, 3) / 8
    raw = encode_query_block(query_block("b9", "t", x, created_at_ms=3,
                                         deadline_ms=np.array([10, 11])))
    kind, header, values, signature = read(raw)
    assert kind == 1 and signature == b"" and "query_ids" not in header
    assert values["input"] == x.reshape(-1).tolist()
    assert values["deadline_ms"] == [10, 11] and values["created_at_ms"] == [3, 3]
    assert header["input"]["offset"] % 64 == 0

    response = ResponseBlock("p1", "x", "t", "v", Privacy(clip_norm=1, noise_multiplier=0),
                             1, 0, [("b9", 2)], np.array([[1, 2], [0, 0]], "<f4"),
                             np.array([0, 2], np.uint8), {}, b"\x07" * 64)
    kind, header, values, signature = read(encode_response_block(response))
    assert kind == 2 and signature == b"\x07" * 64
    assert values["status"] == [0, 2] and values["outputs"] == [1.0, 2.0, 0.0, 0.0]
    assert header["blocks"] == [{"block_id": "b9", "rows": 2}]
    assert header["privacy"] == {"clip_norm": 1.0, "noise_multiplier": 0.0,
                                 "mechanism": "gaussian"}


def test_a_codec_signed_block_verifies_by_hand_and_only_over_the_digest() -> None:
    """The engine's signature checks out with hashlib and Ed25519 alone, as the document
    says (message = SHA-256 of bytes [0, E)); a signature over the raw bytes does not."""
    from cryptography.exceptions import InvalidSignature

    from fi_stream.block_signing import sign_response_block, verify_response_block
    from fi_stream.signing import public_key_bytes
    from schemas import Privacy
    from schemas.blocks import ResponseBlock, decode_response_block, encode_response_block

    key = Ed25519PrivateKey.generate()
    response = ResponseBlock("p1", "x", "t", "v", Privacy(clip_norm=1, noise_multiplier=0),
                             1, 0, [("b9", 1)], np.array([[0.25, 0.75]], "<f4"),
                             np.array([0], np.uint8))
    raw = sign_response_block(encode_response_block(response), key)
    body, signature = raw[:-64], raw[-64:]
    key.public_key().verify(signature, hashlib.sha256(body).digest())  # raises if wrong
    try:
        key.public_key().verify(signature, body)
        raise AssertionError("the signature must be over the digest, not the raw bytes")
    except InvalidSignature:
        pass
    undigested = decode_response_block(body + key.sign(body))
    assert not verify_response_block(undigested, public_key_bytes(key))
