"""The result block: the results of N queries of one query block, per-query arrays plus a
participants × queries `roles` matrix, instead of N Result records (schemas.events.Result
carries the same information per query; docs/wire-format.md maps one onto the other)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from schemas.blocks.frame import Array, layout, pack, unpack
from schemas.blocks.headers import RESULT_CODES, ResultBlockHeader
from schemas.events import WindowRef

#: Buffers in the order they are laid out (weights last, when present).
_BUFFERS: tuple[tuple[str, str], ...] = (
    ("rows", "<i4"), ("status", "|u1"), ("aggregate", "<f8"), ("prediction", "<i8"),
    ("confidence", "<f8"), ("roles", "|u1"), ("created_at_ms", "<i8"), ("deadline_ms", "<i8"),
    ("completed_at_ms", "<i8"))


@dataclass(frozen=True, slots=True, eq=False)
class ResultBlock:
    """Row n is the result of query `query_ids[n]`, row `rows[n]` of query block `block_id`
    (and of every response block to it).

    `status[n]`: index into RESULT_CODES. A row without an aggregate (insufficient,
    rejected) has `aggregate[n]` all NaN, `prediction[n]` -1, `confidence[n]` NaN.
    `roles[n, p]`: what `participants[p]` did for query n (headers.ROLE_CODES, 10 + decline
    code, 20 + exclusion code). `weights[n, p]`: a weighted strategy's weight of an
    included answer (NaN elsewhere), None for an unweighted strategy.
    `responses`: participant index → (partition, offset) of its response block used.
    `reasons`: row → text; `copies`: (row, participant, copy_of) participant indices."""

    block_id: str
    task: str
    strategy: str
    quorum: int
    window: WindowRef
    query_ids: list[str]
    participants: list[str]
    rows: Array
    status: Array
    aggregate: Array
    prediction: Array
    confidence: Array
    roles: Array
    created_at_ms: Array
    deadline_ms: Array
    completed_at_ms: Array
    weights: Array | None = None
    responses: dict[int, tuple[int, int]] = field(default_factory=dict)
    reasons: dict[int, str] = field(default_factory=dict)
    copies: list[tuple[int, int, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.query_ids)

    def status_name(self, row: int) -> str:
        return RESULT_CODES[int(self.status[row])]


def encode_result_block(block: ResultBlock) -> bytes:
    arrays = {name: np.ascontiguousarray(getattr(block, name), dtype=dtype)
              for name, dtype in _BUFFERS}
    if block.weights is not None:
        arrays["weights"] = np.ascontiguousarray(block.weights, dtype="<f8")
    refs, end = layout(arrays)
    header: dict[str, Any] = {
        "schema_version": 1, "block_id": block.block_id, "task": block.task,
        "strategy": block.strategy, "quorum": block.quorum,
        "window": block.window.model_dump(), "query_ids": block.query_ids,
        "participants": block.participants,
        "responses": [{"participant": p, "partition": part, "offset": off}
                      for p, (part, off) in sorted(block.responses.items())],
        "reasons": [{"row": r, "text": t} for r, t in sorted(block.reasons.items())],
        "copies": [{"row": r, "participant": p, "copy_of": c} for r, p, c in block.copies],
        **refs,
    }
    return bytes(pack(ResultBlockHeader.KIND, orjson.dumps(header), arrays, refs, end))


def decode_result_block(raw: bytes | None) -> ResultBlock:
    h, v, _ = unpack(raw, ResultBlockHeader)
    return ResultBlock(
        h.block_id, h.task, h.strategy, h.quorum, h.window, h.query_ids, h.participants,
        v["rows"], v["status"], v["aggregate"], v["prediction"], v["confidence"], v["roles"],
        v["created_at_ms"], v["deadline_ms"], v["completed_at_ms"], v.get("weights"),
        {r.participant: (r.partition, r.offset) for r in h.responses},
        {r.row: r.text for r in h.reasons},
        [(c.row, c.participant, c.copy_of) for c in h.copies])
