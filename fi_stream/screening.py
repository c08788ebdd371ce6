"""Which rows of a query block a participant may answer, and why not the others.

The checks are fi_stream.validation's, made in the order the per-query path made them
(task, expiry, deadline cap, strategy, shape, values), so a row is declined with the same
reason and detail as the single query was: the aggregator rejects exactly what the
participant declines, and no privacy is spent on a row the aggregator would reject. Each
check is O(1) numpy calls per block, whatever N; only declined rows cost Python (their
details).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fi_stream.validation import deadline_problem, input_problems, shape_problem, strategy_problem
from schemas import TaskSpec
from schemas.blocks import DECLINE_CODES, QueryBlock
from schemas.blocks.codec import QueryParts
from schemas.tensor import ITEMSIZE

Array = np.ndarray[Any, Any]

#: Row codes of a response block's status (schemas.blocks.DECLINE_CODES).
ANSWERED = DECLINE_CODES.index("answered")
BUDGET_EXHAUSTED = DECLINE_CODES.index("budget_exhausted")
EXPIRED = DECLINE_CODES.index("expired")
BAD_INPUT = DECLINE_CODES.index("bad_input")
UNSUPPORTED_TASK = DECLINE_CODES.index("unsupported_task")
QUOTA_EXHAUSTED = DECLINE_CODES.index("quota_exhausted")
#: Bound on the float64 error of deadline − created for int64 times, with room to spare.
_FLOAT_SLACK_MS = 4096


@dataclass
class Screened:
    """One block after screening: `status[n]` 0 (answerable) or a decline code, `details`
    block row → why (where the check says more than its code), `inputs` the answerable
    rows' model inputs (float32, writable, in row order; None when there are none)."""

    status: Array
    details: dict[int, str] = field(default_factory=dict)
    inputs: Array | None = None

    def answerable(self) -> Array:
        rows: Array = np.flatnonzero(self.status == ANSWERED)
        return rows

    def limit(self, granted: int, code: int, detail: str) -> None:
        """Only the first `granted` answerable rows stay; the rest are declined (`code`)."""
        rows = self.answerable()[granted:]
        if not len(rows):
            return
        self.status[rows] = code
        self.details.update(dict.fromkeys(rows.tolist(), detail))
        self.inputs = self.inputs[:granted] if granted and self.inputs is not None else None


def screen(block: QueryBlock, task: TaskSpec, now_ms: int,
           max_deadline_ms: int | None = None) -> Screened:
    """Screen every row of `block` against this participant's `task` at `now_ms`."""
    n = len(block)
    status = np.zeros(n, dtype=np.uint8)
    if block.task != task.task:
        status[:] = UNSUPPORTED_TASK
        return Screened(status, dict.fromkeys(
            range(n), f"this participant serves task {task.task}, not {block.task}"))
    out = Screened(status)
    status[block.deadline_ms <= now_ms] = EXPIRED  # no detail: no privacy spent on it
    if max_deadline_ms is not None:
        _cap_rows(block.created_at_ms, block.deadline_ms, out, max_deadline_ms)
    shape = tuple(block.inputs.shape[1:])
    problem = strategy_problem(block.strategy) or (
        shape_problem(shape, "<f4", task)  # as the row views carry it
        if shape != tuple(task.input_shape) else None)
    ok = status == ANSWERED
    if problem is not None:
        status[ok] = BAD_INPUT
        out.details.update(dict.fromkeys(np.flatnonzero(ok).tolist(), problem))
    elif ok.any():
        inputs = block.model_inputs()
        _screen_values(out, inputs if ok.all() else inputs[ok], task)
    return out


def screen_batch(blocks: Sequence[QueryParts], task: TaskSpec, now_ms: int,
                 max_deadline_ms: int | None = None) -> Screened:
    """`screen` of every block of a micro-batch, their rows concatenated in order: the
    same statuses and details (keyed by batch row), with O(1) numpy calls for the whole
    batch. The per-block checks (task, strategy, shape) are Python comparisons; the
    per-row ones (expiry, deadline cap, values) run once over all the batch's rows, so a
    batch of 256 blocks of one costs about what one block of 256 does."""
    sizes = [p.rows for p in blocks]
    status = np.zeros(sum(sizes), dtype=np.uint8)
    out = Screened(status)
    if not blocks:
        return out
    kinds, texts = _block_checks(blocks, task, out)
    kind = np.repeat(np.array(kinds, dtype=np.uint8), sizes)  # per row: 0 ok, 1 task, 2 other
    created = np.frombuffer(b"".join([p.raw[p.created_at:p.created_at + 8 * p.rows]
                                      for p in blocks]), "<i8")
    deadline = np.frombuffer(b"".join([p.raw[p.deadline_at:p.deadline_at + 8 * p.rows]
                                       for p in blocks]), "<i8")
    status[kind == 1] = UNSUPPORTED_TASK
    status[(deadline <= now_ms) & (kind != 1)] = EXPIRED
    if max_deadline_ms is not None:
        _cap_rows(created, deadline, out, max_deadline_ms)
    ok = status == ANSWERED
    if any(kinds):
        rejected = np.flatnonzero(ok & (kind == 2))
        if len(rejected):
            status[rejected] = BAD_INPUT
            owner = np.repeat(np.arange(len(blocks)), sizes)[rejected]
            out.details.update(zip(rejected.tolist(), [texts[b] for b in owner.tolist()],
                                   strict=True))
            ok[rejected] = False
        good = kind == 0
        ok = ok[good] if not good.all() else ok
    if ok.any():
        inputs = _model_inputs([p for p, k in zip(blocks, kinds, strict=True) if not k], task)
        _screen_values(out, inputs if ok.all() else inputs[ok], task)
    return out


def _block_checks(blocks: Sequence[QueryParts], task: TaskSpec, out: Screened
                  ) -> tuple[list[int], list[str]]:
    """Per block: 0 (its rows go on to the row checks), 1 (another task: every row
    declined, detail set here) or 2 (a strategy or shape problem: its rows still
    unexpired and within the cap are declined with the text); and the texts."""
    kinds: list[int] = []
    texts: list[str] = []
    problems: dict[tuple[str | None, tuple[int, ...]], str | None] = {}
    want = tuple(task.input_shape)
    at = 0
    for p in blocks:
        key = (p.strategy, p.shape)
        if p.task != task.task:
            other = f"this participant serves task {task.task}, not {p.task}"
            out.details.update(dict.fromkeys(range(at, at + p.rows), other))
            kinds.append(1)
            texts.append(other)
        else:
            if key not in problems:
                problems[key] = strategy_problem(p.strategy) or (
                    shape_problem(p.shape, "<f4", task) if p.shape != want else None)
            text = problems[key]
            kinds.append(0 if text is None else 2)
            texts.append(text or "")
        at += p.rows
    return kinds, texts


def _model_inputs(blocks: list[QueryParts], task: TaskSpec) -> Array:
    """QueryBlock.model_inputs of `blocks` (all of the task's shape), rows concatenated:
    one numpy pass per (dtype, scale) among them, usually one."""
    shape = tuple(task.input_shape)
    width = math.prod(shape)
    groups: dict[tuple[str, float | None], list[int]] = {}
    for i, p in enumerate(blocks):
        groups.setdefault((p.dtype, p.input_scale), []).append(i)
    parts: list[tuple[list[int], Array]] = []
    for (dtype, scale), members in groups.items():
        size = width * ITEMSIZE[dtype]
        chosen = [blocks[i] for i in members]
        data = b"".join([p.raw[p.input_at:p.input_at + p.rows * size] for p in chosen])
        values = np.frombuffer(data, dtype).astype(np.float32).reshape(
            (sum(p.rows for p in chosen), *shape))
        if scale is not None:
            values *= np.float32(scale)
        parts.append((members, values))
    if len(parts) == 1:
        return parts[0][1]
    starts = np.cumsum([0] + [p.rows for p in blocks]).tolist()
    out = np.empty((starts[-1], *shape), dtype=np.float32)
    for members, values in parts:
        rows = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in members])
        out[rows] = values
    return out


def _cap_rows(created: Array, deadline: Array, out: Screened, max_deadline_ms: int) -> None:
    """Rows whose deadline is more than `max_deadline_ms` after their creation: bad_input
    with validation.deadline_problem's text, decided by it exactly (Python ints) for the
    rows a float64 pre-screen finds near or past the cap (its error is below 2,048 ms for
    any int64 pair; int64 itself could wrap). Usually none is: four numpy calls."""
    near = np.flatnonzero((deadline.astype(np.float64) - created.astype(np.float64)
                           > max_deadline_ms - _FLOAT_SLACK_MS) & (out.status == ANSWERED))
    for row in near.tolist():
        problem = deadline_problem(int(created[row]), int(deadline[row]), max_deadline_ms)
        if problem is not None:
            out.status[row] = BAD_INPUT
            out.details[row] = problem


def _screen_values(out: Screened, inputs: Array, task: TaskSpec) -> None:
    """Keep the rows whose values the task allows (finite, within its range) in
    `out.inputs`; decline the others with validation.input_problems' reason. Whole-array
    reductions first; the per-row ones only when something is out of range."""
    low, high = task.input_min, task.input_max
    if inputs.size:
        with np.errstate(invalid="ignore"):
            fine = bool(np.isfinite(inputs).all()) and (
                low is None or float(inputs.min()) >= low) and (
                high is None or float(inputs.max()) <= high)
        if fine:
            out.inputs = inputs
            return
    problems = input_problems(inputs, task)
    bad = np.fromiter((p is not None for p in problems), dtype=bool, count=len(problems))
    if not bad.any():
        out.inputs = inputs
        return
    rows = out.answerable()[bad]
    out.status[rows] = BAD_INPUT
    out.details.update(zip(rows.tolist(), [p for p in problems if p is not None],
                           strict=True))
    out.inputs = inputs[~bad] if not bad.all() else None
