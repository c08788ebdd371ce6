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


@dataclass(frozen=True, slots=True)
class QueryHeader:
    """What can be read of a query that does not decode, for its `rejected` Result."""

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


def readable_header(raw: bytes | None) -> QueryHeader | None:
    """The query id (and what else is valid) of an undecodable query; None when even the
    id cannot be read (then the record only goes to the DLQ)."""
    if raw is None:
        return None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    qid = _id(obj.get("query_id"))
    if qid is None:
        return None
    return QueryHeader(query_id=qid, task=_id(obj.get("task")) or "unknown",
                       created_at_ms=_count(obj.get("created_at_ms"), 0) or 0,
                       deadline_ms=_count(obj.get("deadline_ms"), 0) or 0,
                       quorum=_count(obj.get("quorum"), 1) or 1)


# -- labels -------------------------------------------------------------------------------------

def label_problem(label: int, num_classes: int | None) -> str | None:
    """A label must name a class of the task (`num_classes`, when known)."""
    if not 0 <= label <= MAX_LABEL:
        return f"label {label} outside [0, {MAX_LABEL}]"
    if num_classes is not None and label >= num_classes:
        return f"label {label} is not a class of the task (it has {num_classes})"
    return None
