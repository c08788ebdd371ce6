"""The block frame: a 12-byte prefix, a JSON header, aligned raw buffers (and, for a
response block, a 64-byte signature). docs/wire-format.md describes it byte by byte.

    0   4  magic  b"FIBK"
    4   1  version (1)
    5   1  kind: 1 query block, 2 response block, 3 result block
    6   2  flags, uint16 little-endian, 0
    8   4  header length H, uint32 little-endian
    12  H  header: a JSON object, UTF-8
    D      data section, D = 12 + H rounded up to a multiple of 64; every buffer at
           D + its `offset`; zero bytes between
    E  64  Ed25519 signature over bytes [0, E) (response blocks only)

Every failure is a `DecodeError` (schemas.codec) naming what is wrong; nothing else escapes.
"""

from __future__ import annotations

import math
import struct
from typing import Any, TypeVar

import numpy as np
import pydantic

from schemas.blocks.headers import ALIGN, BlockHeader, TensorRef
from schemas.codec import MAX_RECORD_BYTES, DecodeError
from schemas.events import SCHEMA_VERSION
from schemas.tensor import ITEMSIZE

MAGIC = b"FIBK"
PREFIX = struct.Struct("<4sBBHI")
PREFIX_SIZE = PREFIX.size  # 12
SIGNATURE_SIZE = 64
CONTENT_TYPE = b"application/vnd.fi-stream.block"

H = TypeVar("H", bound=BlockHeader)
Array = np.ndarray[Any, Any]


def aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def nbytes(ref: TensorRef) -> int:
    return math.prod(ref.shape) * ITEMSIZE[ref.dtype]


def layout(arrays: dict[str, Array]) -> tuple[dict[str, dict[str, Any]], int]:
    """Each array's TensorRef (as the JSON object), in the given order, each at the next
    aligned offset; and the data section's length. Plain dicts: a model per buffer would
    cost more than the whole block of one."""
    refs: dict[str, dict[str, Any]] = {}
    end = 0
    for name, array in arrays.items():
        at = aligned(end)
        refs[name] = {"dtype": array.dtype.str, "shape": array.shape, "offset": at}
        end = at + array.nbytes
    return refs, end


def pack(kind: int, header: bytes, arrays: dict[str, Array],
         refs: dict[str, dict[str, Any]], data_length: int, trailer: int = 0) -> bytearray:
    """The frame's bytes, with `trailer` zero bytes at the end for a signature."""
    start = aligned(PREFIX_SIZE + len(header))
    out = bytearray(start + data_length + trailer)
    PREFIX.pack_into(out, 0, MAGIC, SCHEMA_VERSION, kind, 0, len(header))
    out[PREFIX_SIZE:PREFIX_SIZE + len(header)] = header
    for name, array in arrays.items():
        at = start + refs[name]["offset"]
        out[at:at + array.nbytes] = array.tobytes()
    return out


def _prefix(raw: bytes) -> tuple[int, int, int]:
    """(kind, flags, header length) of a record that starts with a block prefix this build
    reads; a `DecodeError` otherwise."""
    if len(raw) < PREFIX_SIZE:
        raise DecodeError("malformed", f"{len(raw)} B is shorter than the 12-byte prefix")
    magic, version, kind, flags, length = PREFIX.unpack_from(raw)
    if magic != MAGIC:
        raise DecodeError("malformed", f"not a block: magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version != SCHEMA_VERSION:
        raise DecodeError("unsupported_version", f"block frame version {version} is not"
                          f" understood; this build reads version {SCHEMA_VERSION}")
    return int(kind), int(flags), int(length)


def block_kind(raw: bytes | None) -> int:
    """1 query block, 2 response block, 3 result block, read from the prefix alone (what a
    reader of a mixed stream dispatches on); a `DecodeError` when `raw` is not a block."""
    if raw is None:
        raise DecodeError("malformed", "record has no value (tombstone)")
    kind, _, _ = _prefix(raw)
    if kind not in (1, 2, 3):
        raise DecodeError("invalid", f"unknown block kind {kind}")
    return kind


def unpack(raw: bytes | None, cls: type[H]) -> tuple[H, dict[str, Array], int]:
    """The validated header, a read-only view per buffer, and where the data ends (the
    signature's offset for a response block)."""
    if raw is None:
        raise DecodeError("malformed", "record has no value (tombstone)")
    if type(raw) is not bytes:
        raw = bytes(raw)
    if len(raw) > MAX_RECORD_BYTES:
        raise DecodeError("oversized", f"{len(raw)} B exceeds {MAX_RECORD_BYTES} B")
    kind, flags, length = _prefix(raw)
    if kind != cls.KIND or flags != 0:
        raise DecodeError("invalid", f"expected a {cls.SCHEMA} (kind {cls.KIND}, flags 0);"
                          f" got kind {kind}, flags {flags}")
    if PREFIX_SIZE + length > len(raw):
        raise DecodeError("malformed", f"header length {length} runs past the record's end")
    header = _validate(raw[PREFIX_SIZE:PREFIX_SIZE + length], cls)
    start = aligned(PREFIX_SIZE + length)
    views, end = _views(raw, start, header)
    expected = end + (SIGNATURE_SIZE if cls.KIND == 2 else 0)
    if len(raw) != expected:
        raise DecodeError("malformed", f"{cls.SCHEMA} must be {expected} B long by its"
                          f" header; got {len(raw)} B")
    return header, views, end


def _validate(text: bytes, cls: type[H]) -> H:
    try:
        return cls.model_validate_json(text)
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise DecodeError("invalid", f"{cls.SCHEMA}: {where}: {first['msg']}"
                          f" ({exc.error_count()} error(s))") from None


def _views(raw: bytes, start: int, header: BlockHeader) -> tuple[dict[str, Array], int]:
    views: dict[str, Array] = {}
    end = start
    # By offset, then size: an empty buffer may share its offset with the next one.
    for offset, size, name, ref in sorted((ref.offset, nbytes(ref), name, ref)
                                          for name, ref in header.tensors().items()):
        at = start + offset
        count = math.prod(ref.shape)
        if at < end or at + size > len(raw):
            raise DecodeError("malformed", f"buffer {name} [{offset}, +{size}) overlaps"
                              " another or runs past the record's end")
        views[name] = np.frombuffer(raw, dtype=ref.dtype, count=count, offset=at
                                    ).reshape(ref.shape)
        end = at + size
    return views, end


def block_headers(cls: type[BlockHeader], traceparent: str | None = None
                  ) -> list[tuple[str, bytes]]:
    """Kafka record headers of a block: content type, schema name/version, trace context."""
    out = [("content-type", CONTENT_TYPE),
           ("fi-schema", f"{cls.SCHEMA}/{SCHEMA_VERSION}".encode())]
    if traceparent:
        out.append(("traceparent", traceparent.encode()))
    return out
