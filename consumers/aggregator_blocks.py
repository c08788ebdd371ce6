"""The aggregator's side of the block wire (issue 13): query block records in as per-query
views, results out as one result block record per query block and pass, and the query ids
a resumed owner finds in fi.results.

The join (fi_stream.join) and `build_result` stay per query: blocks are converted at the
edges (schemas.blocks.convert), so results and incentive windows are exactly those the
per-query wire gave.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fi_stream.batched import Batched
from schemas import DecodeError, Query, Result
from schemas.blocks import (
    QueryBlock,
    ResultBlockHeader,
    block_headers,
    decode_query_block,
    decode_result_block,
    encode_result_block,
    split_query_id,
)
from schemas.blocks.convert import query_views, result_block_of

#: Kafka headers of every result block record.
RESULT_HEADERS = block_headers(ResultBlockHeader)


def read_query_block(raw: bytes | None) -> tuple[QueryBlock, list[Query]]:
    """The block and its per-query views; a `DecodeError` for anything the views could not
    carry (negative times: a `Query` holds epoch milliseconds ≥ 0)."""
    block = decode_query_block(raw)
    if min(block.created_at_ms.tolist()) < 0 or min(block.deadline_ms.tolist()) < 0:
        raise DecodeError("invalid", "fi.query_block: created_at_ms and deadline_ms must "
                          "be epoch milliseconds >= 0")
    try:
        return block, query_views(block)
    except ValueError as exc:  # pydantic's ValidationError is one
        raise DecodeError("invalid", f"fi.query_block: {str(exc)[:300]}") from None


@dataclass(frozen=True, slots=True)
class Settled:
    """A result and what its incentive window and the strategies' histories take of it
    (`Histories.add`): added when the result is written, in log order."""

    result: Result
    ids: list[str] = field(default_factory=list)
    outputs: Any = None
    batched: Batched | None = None


class ResultBlocks:
    """The results of one pass of the poll loop, by query block: each block's become one
    result block record (several only if its rows differ in strategy, quorum, task or
    window, which one block's rows settled in one pass never do, save a rejected row of
    a block naming a strategy of its own)."""

    def __init__(self) -> None:
        self._groups: dict[tuple[int, str], list[Settled]] = {}

    def __len__(self) -> int:
        return sum(map(len, self._groups.values()))

    def add(self, partition: int, settled: Settled) -> None:
        block_id = settled.result.query_id.rpartition(".")[0]
        group = self._groups.get((partition, block_id))
        if group is None:
            self._groups[partition, block_id] = [settled]
        else:
            group.append(settled)

    def take(self) -> list[tuple[int, str, bytes, list[Settled]]]:
        """(partition, block id, record value, its results in row order) of every block
        with results, in the order their first results came; the groups are emptied. The
        records, and the rows within each, are the order of the log: the order in which
        the incentive windows must take them (the audit replays them so)."""
        out: list[tuple[int, str, bytes, list[Settled]]] = []
        for (partition, block_id), group in self._groups.items():
            for part in _uniform(group):
                out.append((partition, block_id,
                            encode_result_block(result_block_of([s.result for s in part])),
                            part))
        self._groups.clear()
        return out


def _uniform(group: list[Settled]) -> list[list[Settled]]:
    """`results` (of one block) split by what a result block holds once for all its rows,
    each part in row order. Aggregates of one block may differ in width only where the
    task publishes no width (participants answered different queries at different widths):
    such rows go to a part per width, rows without an aggregate to the first."""
    parts: dict[tuple[Any, ...], list[Settled]] = {}
    for s in group:
        r = s.result
        key = (r.task, r.strategy, r.quorum, r.window.partition, r.window.seq)
        parts.setdefault(key, []).append(s)
    out: list[list[Settled]] = []
    for part in parts.values():
        by_width: dict[Any, list[Settled]] = {}
        for s in part:
            if s.result.aggregate is not None:
                by_width.setdefault(s.result.aggregate.shape, []).append(s)
        split = list(by_width.values()) or [[]]
        split[0] += [s for s in part if s.result.aggregate is None]
        out += [sorted(p, key=lambda s: split_query_id(s.result.query_id)[1]) if len(p) > 1
                else p for p in split]
    return out


def emitted_query_ids(values: Iterable[bytes | None]) -> set[str]:
    """The query ids of the result blocks among `values` (records of fi.results); what is
    not a result block was not emitted by an aggregator and names no query of ours."""
    out: set[str] = set()
    for value in values:
        try:
            out.update(decode_result_block(value).query_ids)
        except DecodeError:
            continue
    return out
