"""What makes a query, an answer row or a label acceptable: pure functions, no Kafka, no clock.

The aggregator, the participants, merit and the auditor all call these, so they accept and
reject exactly the same records (a participant never spends privacy on a query the
aggregator rejects; the auditor re-checks every exclusion the aggregator made).

The answer-row bound (`norm_bound`)
-----------------------------------
A participant releases y = x + n with ‖x‖₂ ≤ C (clipped) and n ~ N(0, (σC)² I_d), C and σ
its REGISTERED `privacy.clip_norm` and `privacy.noise_multiplier` (every mechanism has this
meaning). So ‖y‖ ≤ C + ‖n‖. ‖n‖/(σC) is chi-distributed with d degrees of freedom; the
Euclidean norm is 1-Lipschitz, so Gaussian concentration (Tsirelson–Ibragimov–Sudakov)
gives P(‖n‖/(σC) ≥ E + t) ≤ exp(−t²/2) with E ≤ √d. Hence

    P(‖y‖ > C + σC·(√d + t)) ≤ exp(−t²/2),   t = √(2·ln(1/p)),

and an honest row is wrongly rejected with probability at most p = `FALSE_REJECTION`
(1e-9 per row: t ≈ 6.44; for C = 1, σ = 0.3, d = 10 the bound is 3.88). A relative slack of
`FLOAT_SLACK` covers float32 rounding of the clipped row.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from fi_stream.strategies import STRATEGIES
from schemas import (
    MAX_LABEL,
    ExclusionReason,
    Participant,
    Privacy,
    Query,
    TaskSpec,
)
from schemas.blocks import MAX_BLOCK, QueryBlock, QueryBlockHeader, query_id
from schemas.blocks.frame import MAGIC, PREFIX, PREFIX_SIZE, aligned

#: Probability that an honest answer row fails `norm_bound` (per row).
FALSE_REJECTION = 1e-9
#: Relative slack on the bound for float32 rounding of a clipped row (≈ 80 float32 ulps).
FLOAT_SLACK = 1e-5

_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-")


# -- answer rows --------------------------------------------------------------------------------

def norm_bound(clip_norm: float, noise_multiplier: float, dim: int,
               false_rejection: float = FALSE_REJECTION) -> float:
    """Largest plausible L2 norm of a released row (see the module docstring)."""
    if not (clip_norm > 0 and noise_multiplier >= 0 and dim >= 1 and 0 < false_rejection < 1):
        raise ValueError(f"need C > 0, σ >= 0, d >= 1 and 0 < p < 1; got C={clip_norm}, "
                         f"σ={noise_multiplier}, d={dim}, p={false_rejection}")
    t = math.sqrt(2.0 * math.log(1.0 / false_rejection))
    bound = clip_norm + noise_multiplier * clip_norm * (math.sqrt(dim) + t)
    return bound * (1.0 + FLOAT_SLACK)


def screen_rows(rows: npt.ArrayLike, privacy: Privacy, width: int | None
                ) -> list[ExclusionReason | None]:
    """Per row of a batch's (n, d) outputs: None if plausible, else why not.

    `privacy` is the participant's REGISTERED one, `width` its task's published number of
    classes (None: unpublished, any width). Never raises: anything is an input.
    """
    x = np.asarray(rows)
    if x.ndim != 2:
        return ["wrong_width"] * (len(x) if x.ndim >= 1 else 0)
    if x.shape[0] == 0:
        return []
    if (width is not None and x.shape[1] != width) or x.shape[1] == 0:
        return ["wrong_width"] * x.shape[0]
    x64 = x.astype(np.float64)
    finite: list[bool] = np.isfinite(x64).all(axis=1).reshape(-1).tolist()
    with np.errstate(all="ignore"):
        # Rows divided by their peak first: a huge finite row cannot overflow to inf.
        peak = np.abs(np.where(np.isfinite(x64), x64, 0.0)).max(axis=1)
        safe = np.where(peak > 0, peak, 1.0)
        norms = peak * np.linalg.norm(x64 / safe[:, None], axis=1)
    bound = norm_bound(privacy.clip_norm, privacy.noise_multiplier, x.shape[1])
    out: list[ExclusionReason | None] = []
    for ok, norm in zip(finite, norms.tolist(), strict=True):
        out.append(None if ok and norm <= bound else "non_finite" if not ok
                   else "implausible_norm")
    return out


def privacy_problem(declared: Privacy, registered: Privacy) -> str | None:
    """A batch must declare exactly the privacy its participant registered."""
    if declared == registered:
        return None
    return (f"batch declares {declared.mechanism} C={declared.clip_norm} "
            f"σ={declared.noise_multiplier}, registered {registered.mechanism} "
            f"C={registered.clip_norm} σ={registered.noise_multiplier}")


# -- queries ------------------------------------------------------------------------------------

def task_spec(entries: Iterable[Participant], task: str) -> TaskSpec | None:
    """The published spec of `task`: that of the first serving participant (by id) that
    publishes one. Participants that disagree each check their own."""
    for entry in sorted(entries, key=lambda p: p.participant_id):
        if entry.active and task in entry.tasks:
            for spec in entry.task_specs or ():
                if spec.task == task:
                    return spec
    return None


def own_spec(entry: Participant, task: str) -> TaskSpec | None:
    for spec in entry.task_specs or ():
        if spec.task == task:
            return spec
    return None


def deadline_problem(created_at_ms: int, deadline_ms: int, max_deadline_ms: int) -> str | None:
    """A deadline further than `max_deadline_ms` after the query's creation is rejected
    (not clamped: a clamped query would get a Result whose deadline is not the one it
    asked for). Only the query's own fields decide, so every service agrees."""
    if deadline_ms - created_at_ms > max_deadline_ms:
        return (f"deadline_too_far: deadline {deadline_ms} is {deadline_ms - created_at_ms} ms "
                f"after created_at {created_at_ms}; the cap is {max_deadline_ms} ms")
    return None


def input_problems(values: npt.NDArray[Any], spec: TaskSpec) -> list[str | None]:
    """Per row of a (n, *input_shape) batch of inputs: None if within the spec's value
    range (and finite), else the reason. Vectorised: a participant checks whole batches."""
    n = len(values)
    if n == 0:
        return []
    flat = np.asarray(values).reshape(n, -1)
    if _all_fine(flat, spec):
        return [None] * n
    finite = np.isfinite(flat).all(axis=1)
    with np.errstate(invalid="ignore"):
        low = flat.min(axis=1) if flat.shape[1] else np.zeros(n)
        high = flat.max(axis=1) if flat.shape[1] else np.zeros(n)
    out: list[str | None] = []
    lo, hi = spec.input_min, spec.input_max
    for ok, a, b in zip(finite.tolist(), low.tolist(), high.tolist(), strict=True):
        if not ok:
            out.append("bad_input: input contains NaN or Inf")
        elif lo is not None and a < lo:
            out.append(f"bad_input: input value {a:.6g} below the task's minimum {lo:g}")
        elif hi is not None and b > hi:
            out.append(f"bad_input: input value {b:.6g} above the task's maximum {hi:g}")
        else:
            out.append(None)
    return out


def _all_fine(flat: npt.NDArray[Any], spec: TaskSpec) -> bool:
    """Every value finite and in the spec's range, by two reductions over the whole batch
    (NaN and ±Inf carry into the min or max): the usual case, then no row is looked at."""
    if not flat.shape[1] or flat.dtype.kind != "f":
        return False
    low, high = float(flat.min()), float(flat.max())
    return (bool(np.isfinite(low)) and bool(np.isfinite(high))
            and (spec.input_min is None or low >= spec.input_min)
            and (spec.input_max is None or high <= spec.input_max))


def shape_problem(shape: tuple[int, ...], dtype: str, spec: TaskSpec) -> str | None:
    if tuple(shape) != tuple(spec.input_shape) or dtype != spec.input_dtype:
        return (f"bad_input: input {dtype} {list(shape)}, task {spec.task} takes "
                f"{spec.input_dtype} {list(spec.input_shape)}")
    return None


def strategy_problem(strategy: str | None, known: Collection[str] = STRATEGIES) -> str | None:
    """A query may name only a strategy the aggregator runs (`known`: the registry). An
    unknown name is rejected, never replaced by the default: the client asked for a rule
    it would not get."""
    if strategy is None or strategy in known:
        return None
    return (f"unknown_strategy: the query names strategy {strategy[:64]!r}; "
            f"the aggregator runs {', '.join(sorted(known))}")


def query_problem(query: Query, spec: TaskSpec | None, max_deadline_ms: int) -> str | None:
    """Why a decoded query is invalid (the reason of its `rejected` Result), or None.

    `spec` is the task's published input spec (None: unpublished, only finiteness)."""
    problem = (deadline_problem(query.created_at_ms, query.deadline_ms, max_deadline_ms)
               or strategy_problem(query.strategy))
    if problem is not None:
        return problem
    t = query.input
    if spec is not None:
        problem = shape_problem(t.shape, t.dtype, spec)
        if problem is not None:
            return problem
        return input_problems(t.to_numpy().reshape(1, -1), spec)[0]
    if t.dtype.startswith("<f") and not np.isfinite(t.to_numpy()).all():
        return "bad_input: input contains NaN or Inf"
    return None


def block_problems(block: QueryBlock, spec: TaskSpec | None,
                   max_deadline_ms: int) -> list[str | None]:
    """`query_problem` of every row of a query block, row for row the same text as on the
    row's `Query` view (schemas.blocks.convert.queries_of), with one numpy pass per check
    over the block instead of one per query: a block of N valid queries costs O(1) numpy
    calls and a list of N Nones."""
    n = len(block)
    created = np.asarray(block.created_at_ms, dtype=np.int64)
    deadline = np.asarray(block.deadline_ms, dtype=np.int64)
    out = _deadline_problems(created, deadline, max_deadline_ms)
    whole = strategy_problem(block.strategy)
    x = block.model_inputs()  # what the views carry: <f4 rows as the model sees them
    if whole is None and spec is not None:
        whole = shape_problem(tuple(x.shape[1:]), "<f4", spec)
    if whole is not None:
        return [p if p is not None else whole for p in out]
    flat = x.reshape(n, -1)
    if spec is not None:
        rows = input_problems(flat, spec)
    else:
        finite: list[bool] = np.isfinite(flat).all(axis=1).reshape(-1).tolist()
        rows = [None if ok else "bad_input: input contains NaN or Inf" for ok in finite]
    return [p if p is not None else r for p, r in zip(out, rows, strict=True)]


def _deadline_problems(created: npt.NDArray[np.int64], deadline: npt.NDArray[np.int64],
                       max_deadline_ms: int) -> list[str | None]:
    """`deadline_problem` of every row: on Python ints for a few rows (a block of one
    costs ~1 µs so, ~5 in numpy), else by one numpy pass that picks the rows to test."""
    if len(created) <= 8:
        return [deadline_problem(c, d, max_deadline_ms)
                for c, d in zip(created.tolist(), deadline.tolist(), strict=True)]
    out: list[str | None] = [None] * len(created)
    # In float64 (int64 could wrap), loosely; the exact test is deadline_problem's own.
    near = deadline.astype(np.float64) - created.astype(np.float64) > max_deadline_ms - 4096
    for i in np.flatnonzero(near).tolist():
        out[i] = deadline_problem(int(created[i]), int(deadline[i]), max_deadline_ms)
    return out


@dataclass(frozen=True, slots=True)
class QueryHeader:
    """What can be read of a row of a query block that does not decode, for its `rejected`
    Result."""

    query_id: str
    task: str
    created_at_ms: int
    deadline_ms: int
    quorum: int


def _id(value: Any) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= 128 and set(value) <= _ID_CHARS:
        return value
    return None


def _count(value: Any, minimum: int) -> int | None:
    return value if type(value) is int and minimum <= value < 2**63 else None


def readable_block_headers(raw: bytes | None) -> list[QueryHeader] | None:
    """Per row of an undecodable query block whose id and row count can still be read
    (from its JSON header: the id, N from the first buffer's shape), what its `rejected`
    Result needs; None when they cannot (then the record only goes to the DLQ). Times are
    read from their buffers where those lie in the record, else 0."""
    found = _query_block_json(raw)
    if found is None:
        return None
    raw, obj, start = found
    block_id = _id(obj.get("block_id"))
    n = next((m for m in map(_rows, (obj.get(k) for k in QueryBlockHeader.BUFFERS))
              if m is not None), None)
    if block_id is None or len(block_id) > 122 or n is None:
        return None
    created = _times(raw, start, obj.get("created_at_ms"), n)
    deadline = _times(raw, start, obj.get("deadline_ms"), n)
    task = _id(obj.get("task")) or "unknown"
    quorum = min(_count(obj.get("quorum"), 1) or 1, MAX_BLOCK)
    return [QueryHeader(query_id(block_id, i), task, created[i], deadline[i], quorum)
            for i in range(n)]


def _query_block_json(raw: bytes | None) -> tuple[bytes, dict[str, Any], int] | None:
    """The record, the JSON object of a query block's header (not validated) and where its
    data section starts; None when the prefix or the JSON cannot be read."""
    if raw is None or len(raw) < PREFIX_SIZE:
        return None
    magic, _, kind, _, length = PREFIX.unpack_from(raw)
    if magic != MAGIC or kind != QueryBlockHeader.KIND:
        return None
    try:
        obj = orjson.loads(raw[PREFIX_SIZE:PREFIX_SIZE + length])
    except orjson.JSONDecodeError:
        return None
    return (raw, obj, aligned(PREFIX_SIZE + length)) if isinstance(obj, dict) else None


def _rows(ref: Any) -> int | None:
    """N of a buffer's JSON TensorRef, when it names 1..MAX_BLOCK rows."""
    shape = ref.get("shape") if isinstance(ref, dict) else None
    if isinstance(shape, list) and shape and type(shape[0]) is int and (
            1 <= shape[0] <= MAX_BLOCK):
        return int(shape[0])
    return None


def _times(raw: bytes, start: int, ref: Any, n: int) -> list[int]:
    """An <i8 [n] time buffer's values (negative ones as 0), or n zeros."""
    at = ref.get("offset") if isinstance(ref, dict) else None
    if (type(at) is not int or at < 0 or ref.get("dtype") != "<i8" or _rows(ref) != n
            or start + at + 8 * n > len(raw)):
        return [0] * n
    values: list[int] = np.maximum(
        np.frombuffer(raw, dtype="<i8", count=n, offset=start + at), 0).tolist()
    return values


# -- labels -------------------------------------------------------------------------------------

def label_problem(label: int, num_classes: int | None) -> str | None:
    """A label must name a class of the task (`num_classes`, when known)."""
    if not 0 <= label <= MAX_LABEL:
        return f"label {label} outside [0, {MAX_LABEL}]"
    if num_classes is not None and label >= num_classes:
        return f"label {label} is not a class of the task (it has {num_classes})"
    return None
