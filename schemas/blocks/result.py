"""The result block: the results of N rows of one query block, per-row arrays plus
participants × rows matrices (`roles`, `response`, `index`, `weights`), instead of N Result
records. schemas.events.Result carries the same information per query and is the
in-memory view (schemas.blocks.convert maps one onto the other, exactly)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from schemas.blocks.frame import Array, layout, pack, unpack
from schemas.blocks.headers import (
    DECLINE_CODES,
    DECLINED_BASE,
    EXCLUDED_BASE,
    EXCLUSION_CODES,
    RESULT_CODES,
    ROLE_CODES,
    ResultBlockHeader,
    query_id,
)
from schemas.codec import DecodeError
from schemas.events import WindowRef

#: Buffers in the order they are laid out (weights last, when present).
_BUFFERS: tuple[tuple[str, str], ...] = (
    ("rows", "<i4"), ("status", "|u1"), ("aggregate", "<f8"), ("prediction", "<i8"),
    ("confidence", "<f8"), ("roles", "|u1"), ("response", "<i4"), ("index", "<i4"),
    ("created_at_ms", "<i8"), ("deadline_ms", "<i8"), ("completed_at_ms", "<i8"))
#: Every valid `roles` cell, and those that name an answer (a `response` and an `index`).
_ROLES = np.array([*ROLE_CODES, *(DECLINED_BASE + k for k in range(1, len(DECLINE_CODES))),
                   *(EXCLUDED_BASE + k for k in range(len(EXCLUSION_CODES)))], dtype="|u1")
_WITH_ANSWER = np.array([1, 3, *(EXCLUDED_BASE + k for k in range(len(EXCLUSION_CODES)))],
                        dtype="|u1")
#: Lookup tables over a |u1 role code: is it known, does it name an answer.
_KNOWN_ROLE = np.zeros(256, dtype=bool)
_KNOWN_ROLE[_ROLES] = True
_NAMES_ANSWER = np.zeros(256, dtype=bool)
_NAMES_ANSWER[_WITH_ANSWER] = True


@dataclass(frozen=True, slots=True, eq=False)
class ResultBlock:
    """Result row n is the result of query `query_id(block_id, rows[n])` (`query_ids`).

    `status[n]`: index into RESULT_CODES. A row without an aggregate has `aggregate[n]`
    all NaN, `prediction[n]` -1, `confidence[n]` NaN. `roles[n, p]`: what `participants[p]`
    did for query n (headers.ROLE_CODES, 10 + decline code, 20 + exclusion code).
    `response[n, p]`: index into `responses` [(partition, offset)] of the record the
    answer (included, excluded or copied) came from, -1 none; `index[n, p]`: the answer's
    index among that record's answered rows, -1 none. `weights[n, p]`: a weighted
    strategy's weight of an included answer (NaN elsewhere), None for no weights at all.
    `reasons`: row → text; `copies`: (row, participant, copy_of) participant indices,
    in the Results' order."""

    block_id: str
    task: str
    strategy: str
    quorum: int
    window: WindowRef
    participants: list[str]
    rows: Array
    status: Array
    aggregate: Array
    prediction: Array
    confidence: Array
    roles: Array
    response: Array
    index: Array
    created_at_ms: Array
    deadline_ms: Array
    completed_at_ms: Array
    weights: Array | None = None
    responses: list[tuple[int, int]] = field(default_factory=list)
    reasons: dict[int, str] = field(default_factory=dict)
    copies: list[tuple[int, int, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    @property
    def query_ids(self) -> list[str]:
        """Result row n's query id (derived from block_id and `rows`)."""
        return [query_id(self.block_id, int(r)) for r in self.rows.tolist()]

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
        "window": {"partition": block.window.partition, "seq": block.window.seq},
        "participants": block.participants,
        "responses": [{"partition": part, "offset": off} for part, off in block.responses],
        "reasons": [{"row": r, "text": t} for r, t in sorted(block.reasons.items())],
        "copies": [{"row": r, "participant": p, "copy_of": c} for r, p, c in block.copies],
        **refs,
    }
    return bytes(pack(ResultBlockHeader.KIND, orjson.dumps(header), arrays, refs, end))


def decode_result_block(raw: bytes | None) -> ResultBlock:
    """The block in `raw`; a `DecodeError` naming what is wrong for anything else (rows
    distinct and ≥ 0, `response` within `responses`: O(1) numpy calls)."""
    h, v, _ = unpack(raw, ResultBlockHeader)
    problem = _problem(v, len(h.responses))
    if problem:
        raise DecodeError("invalid", f"{ResultBlockHeader.SCHEMA}: {problem}")
    rows, response, index = v["rows"], v["response"], v["index"]
    return ResultBlock(
        h.block_id, h.task, h.strategy, h.quorum, h.window, h.participants,
        rows, v["status"], v["aggregate"], v["prediction"], v["confidence"], v["roles"],
        response, index, v["created_at_ms"], v["deadline_ms"], v["completed_at_ms"],
        v.get("weights"), [(r.partition, r.offset) for r in h.responses],
        {r.row: r.text for r in h.reasons},
        [(c.row, c.participant, c.copy_of) for c in h.copies])


def _problem(v: dict[str, Array], responses: int) -> str | None:
    """What is wrong with the buffers' values (a handful of numpy calls, no row loop;
    boolean lookup tables instead of `np.isin`, which costs ~20 µs a call on a block of
    one)."""
    rows, roles, response, index = v["rows"], v["roles"], v["response"], v["index"]
    if rows.size and (int(rows.min()) < 0 or (
            rows.size > 1 and np.unique(rows).size != rows.size)):
        return "rows must be distinct and ≥ 0"
    if v["status"].size and int(v["status"].max()) >= len(RESULT_CODES):
        return f"status codes are 0..{len(RESULT_CODES) - 1}"
    if not _KNOWN_ROLE[roles].all():
        return "roles has an unknown code"
    answer = _NAMES_ANSWER[roles]
    named = (response >= 0) & (response < responses) & (index >= 0)
    if not np.where(answer, named, (response == -1) & (index == -1)).all():
        return (f"response (0..{responses - 1}) and index (≥ 0) are set exactly for the"
                " cells that name an answer (included, copied, excluded), -1 elsewhere")
    return None
