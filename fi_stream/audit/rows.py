"""The one place a result's rows are resolved: from the (partition, offset, index)
references a result lists to its float64 output rows. The audit's checks, `replay` and
the merit service (consumers/merit.py) all read rows through `RowIndex`."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from fi_stream.audit.log import Logged
from schemas import ResponseBatch
from schemas.blocks import ResponseBlock
from schemas.blocks.convert import response_batch_of

F64 = npt.NDArray[np.float64]


class RowRef(Protocol):
    """A result's reference to one answer row (IncludedAnswer, ExcludedAnswer, ...)."""

    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def index(self) -> int: ...


@dataclass(frozen=True, slots=True)
class BatchRows:
    """One response batch and where its rows sit in `RowIndex.matrices[width]`."""

    batch: ResponseBatch
    width: int
    start: int

    @property
    def participant_id(self) -> str:
        return self.batch.participant_id

    @property
    def answered(self) -> list[str]:
        return self.batch.answered

    def answers(self, index: int, participant_id: str, query_id: str) -> bool:
        """Is row `index` this participant's answer to this query?"""
        return (index < len(self.batch.answered) and self.batch.participant_id == participant_id
                and self.batch.answered[index] == query_id)


def response_views(blocks: Iterable[Logged[ResponseBlock]]
                   ) -> dict[tuple[int, int], ResponseBatch]:
    """The `ResponseBatch` view of each response block by its position (`answered`: the
    ids of its status-0 rows in record order, so a result's `index` is a row of `outputs`).
    A block that does not convert is left out: what lists it finds no response there."""
    out: dict[tuple[int, int], ResponseBatch] = {}
    for logged in blocks:
        try:
            out[(logged.partition, logged.offset)] = response_batch_of(logged.event)
        except (ValueError, TypeError, KeyError, IndexError):
            continue
    return out


class RowIndex:
    """Every batch's output rows in one float64 matrix per width, so that the rows of
    thousands of results are gathered with one fancy index instead of one stack each.

    Converting everything to float64 first is exactly what `np.stack(rows).astype(float64)`
    does per result: every wire dtype converts to float64 the same either way."""

    def __init__(self, batches: Mapping[tuple[int, int], ResponseBatch]) -> None:
        self.batches: dict[tuple[int, int], BatchRows] = {}
        chunks: dict[int, list[npt.NDArray[Any]]] = defaultdict(list)
        sizes: Counter[int] = Counter()
        for key, batch in batches.items():
            rows = batch.outputs.to_numpy()
            width = rows.shape[1]
            self.batches[key] = BatchRows(batch, width, sizes[width])
            sizes[width] += rows.shape[0]
            chunks[width].append(rows)
        self.matrices: dict[int, F64] = {
            w: np.concatenate(c, dtype=np.float64) for w, c in chunks.items()}

    def get(self, partition: int, offset: int) -> BatchRows | None:
        return self.batches.get((partition, offset))

    def flat(self, ref: RowRef) -> tuple[int, int] | None:
        """(width, row in `matrices[width]`) of one reference; None if the log lacks it."""
        found = self.batches.get((ref.partition, ref.offset))
        if found is None or ref.index >= len(found.batch.answered):
            return None
        return found.width, found.start + ref.index

    def row(self, ref: RowRef) -> F64 | None:
        at = self.flat(ref)
        return None if at is None else self.matrices[at[0]][at[1]]

    def rows(self, refs: Sequence[RowRef]) -> F64 | None:
        """The referenced rows, stacked in order, float64; None when the log does not hold
        them all, or they have different widths, or there are none."""
        at = [self.flat(r) for r in refs]
        if not at or None in at:
            return None
        widths = {a[0] for a in at if a is not None}
        if len(widths) != 1:
            return None
        [width] = widths
        return self.matrices[width][[a[1] for a in at if a is not None]]
