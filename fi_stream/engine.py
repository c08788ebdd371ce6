"""The participant's batch path, without Kafka: records → one host batch → device →
model (one model, or K teachers in one vmapped call) → the bounded vector (softmax, or the
vote histogram) → clip → noise → host → one signed ResponseBatch per partition.

`prepare` and `assemble` are plain functions over bytes so that the participant service
and `fi-stream bench engine` run exactly the same code. The noise generator is seeded per
batch from the OS entropy pool and the seed is never published (DESIGN §5).
"""

from __future__ import annotations

import secrets
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from torch import nn

from fi_stream.block_signing import sign_response_block
from fi_stream.models import ModelSpec
from fi_stream.privacy import Mechanism, release
from fi_stream.signing import sign_batch
from fi_stream.validation import deadline_problem, input_problems, strategy_problem
from schemas import (
    Decline,
    DeclineReason,
    DecodeError,
    Privacy,
    QueryView,
    ResponseBatch,
    TaskSpec,
    Tensor,
    decode_query_view,
    encode,
)
from schemas.blocks import QueryBlock, ResponseBlock, encode_response_block

Precision = Literal["fp32", "bf16"]


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class InferenceEngine:
    """The model on its device; one caller of `infer` at a time (a worker thread or the
    loop, see ParticipantService._publish)."""

    def __init__(self, module: nn.Module, spec: ModelSpec, mechanism: Mechanism,
                 device: torch.device, precision: Precision = "fp32",
                 compile: bool = False) -> None:
        self.spec = spec
        self.mechanism = mechanism
        self.device = device
        self.precision = precision
        module = module.to(device).eval()
        self.module: nn.Module = torch.compile(module) if compile else module  # type: ignore[assignment]

    def infer(self, batch: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """(N, *input_shape) float32 → (N, classes) float32 released (noised) vectors.

        The generator is seeded for each batch from the OS's CSPRNG (`secrets`) and the
        seed goes nowhere else: whoever knew it could subtract the noise.
        """
        generator = torch.Generator(device=self.device)
        generator.manual_seed(secrets.randbits(63))
        with torch.inference_mode():
            x = torch.from_numpy(batch)
            if self.device.type == "cuda":
                x = x.pin_memory().to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=torch.bfloat16,
                                enabled=self.precision == "bf16"):
                scores = self.module(x)  # logits, or a teacher ensemble's vote histogram
            noised = release(scores, self.mechanism, generator)
            out: np.ndarray[Any, Any] = noised.cpu().numpy()
        return out


@dataclass
class Prepared:
    """One micro-batch after decoding: what to compute, what to decline, what is broken."""

    answerable: list[tuple[int, str]] = field(default_factory=list)  # (partition, query_id)
    inputs: np.ndarray[Any, Any] | None = None
    declined: dict[int, list[Decline]] = field(default_factory=lambda: defaultdict(list))
    broken: list[tuple[int, DecodeError]] = field(default_factory=list)  # (item index, why)

    def decline(self, partition: int, query_id: str, reason: DeclineReason,
                detail: str | None = None) -> None:
        self.declined[partition].append(Decline(query_id=query_id, reason=reason,
                                                detail=detail))


def prepare(items: Sequence[tuple[int, bytes | None]], spec: ModelSpec, now_ms: int,
            max_deadline_ms: int | None = None,
            quota: Callable[[int, QueryView], bool] | None = None) -> Prepared:
    """Decode (partition, value) items; O(1) numpy calls for the whole batch's inputs.

    A query is answered only if the aggregator accepts it too (the same checks of
    fi_stream.validation against the spec this participant publishes): anything else is
    declined with the exact reason, before any privacy is spent.

    `quota(item index, query)`: may this query's client be answered (fi_stream.quota)?
    Asked only for queries that could otherwise be answered; no: `quota_exhausted`.
    """
    out = Prepared()
    shape = tuple(spec.input_shape)
    chunks: list[bytes] = []
    for index, (partition, raw) in enumerate(items):
        try:
            q = decode_query_view(raw)
        except DecodeError as exc:
            out.broken.append((index, exc))
            continue
        declined = _decline_reason(q, spec, now_ms, max_deadline_ms)
        if declined is not None:
            out.decline(partition, q.query_id, *declined)
        elif quota is not None and not quota(index, q):
            out.decline(partition, q.query_id, "quota_exhausted",
                        f"client {q.client_id} used its share of this participant's budget")
        else:
            out.answerable.append((partition, q.query_id))
            chunks.append(q.data)
    if chunks:
        _screen_inputs(out, chunks, shape, spec.task_spec())
    return out


def _decline_reason(q: QueryView, spec: ModelSpec, now_ms: int, max_deadline_ms: int | None
                    ) -> tuple[DeclineReason, str | None] | None:
    """Why this participant must not answer `q` (before quotas and input values); None: it
    may."""
    shape = tuple(spec.input_shape)
    if q.task != spec.task:
        return "unsupported_task", f"this participant serves task {spec.task}, not {q.task}"
    if q.deadline_ms <= now_ms:
        return "expired", None  # no privacy spent on it
    too_far = (deadline_problem(q.created_at_ms, q.deadline_ms, max_deadline_ms)
               if max_deadline_ms is not None else None)
    if too_far is not None:
        return "bad_input", too_far
    if (unknown := strategy_problem(q.strategy)) is not None:
        return "bad_input", unknown
    if q.shape != shape or q.dtype != "<f4":
        return "bad_input", (f"bad_input: input {q.dtype} {list(q.shape)}, task {spec.task} "
                             f"takes <f4 {list(shape)}")
    return None


def _screen_inputs(out: Prepared, chunks: list[bytes], shape: tuple[int, ...],
                   task: TaskSpec) -> None:
    """Stack the answerable queries' inputs (O(1) numpy calls) into `out.inputs`; decline
    those whose values the task's spec does not allow."""
    # bytearray: one copy that torch may write to (frombuffer over bytes is read-only)
    inputs = np.frombuffer(bytearray(b"".join(chunks)), dtype=np.float32).reshape(
        len(chunks), *shape)
    problems = input_problems(inputs, task)
    if any(p is not None for p in problems):
        for (partition, qid), problem in zip(out.answerable, problems, strict=True):
            if problem is not None:
                out.decline(partition, qid, "bad_input", problem)
        keep = [p is None for p in problems]
        out.answerable = [a for a, ok in zip(out.answerable, keep, strict=True) if ok]
        inputs = inputs[keep]
    out.inputs = inputs


def usable_outputs(outputs: np.ndarray[Any, Any], rows: int, num_classes: int) -> list[bool]:
    """Per row: may it be signed? (finite, and the outputs are (rows, num_classes)). A
    model can turn a valid input into NaN (e.g. logits that overflow); such a row is
    declined as bad_input, never signed."""
    if outputs.ndim != 2 or outputs.shape != (rows, num_classes):
        return [False] * rows
    if bool(np.isfinite(outputs).all()):  # one reduction (numpy reduces short rows slowly)
        return [True] * rows
    ok: list[bool] = np.isfinite(outputs).all(axis=1).reshape(-1).tolist()
    return ok


@dataclass(frozen=True, kw_only=True)
class Signer:
    participant_id: str
    spec: ModelSpec
    privacy: Privacy
    key: Ed25519PrivateKey


def assemble(prepared: Prepared, answered: Sequence[int], outputs: np.ndarray[Any, Any],
             signer: Signer, produced_at_ms: int) -> list[tuple[int, bytes]]:
    """(partition, encoded signed ResponseBatch) per partition with anything to say.

    `answered`: indices into `prepared.answerable` that are answered, row j of `outputs`
    for answered[j]; the other answerable queries were over the privacy budget and are
    declined.
    """
    rows: dict[int, list[int]] = defaultdict(list)
    ids: dict[int, list[str]] = defaultdict(list)
    declined = {p: list(d) for p, d in prepared.declined.items()}
    usable = usable_outputs(outputs, len(answered), signer.spec.num_classes)
    for row, index in enumerate(answered):
        partition, qid = prepared.answerable[index]
        if usable[row]:
            rows[partition].append(row)
            ids[partition].append(qid)
        else:
            declined.setdefault(partition, []).append(Decline(
                query_id=qid, reason="bad_input",
                detail="bad_input: the model's output for this input is not finite"))
    chosen = set(answered)
    for index, (partition, qid) in enumerate(prepared.answerable):
        if index not in chosen:
            declined.setdefault(partition, []).append(
                Decline(query_id=qid, reason="budget_exhausted"))
    out: list[tuple[int, bytes]] = []
    for partition in sorted(rows.keys() | declined.keys()):
        batch = ResponseBatch(
            participant_id=signer.participant_id, batch_id=uuid.uuid4().hex,
            task=signer.spec.task, model_version=signer.spec.version, privacy=signer.privacy,
            produced_at_ms=produced_at_ms, query_partition=partition,
            answered=ids.get(partition, []),
            outputs=Tensor.from_numpy(np.ascontiguousarray(
                outputs[rows[partition]] if partition in rows
                else np.zeros((0, signer.spec.num_classes)), dtype=np.float32)),
            declined=declined.get(partition, []),
        )
        out.append((partition, encode(sign_batch(batch, signer.key))))
    return out


# -- blocks (issue 13): a decoded block's [N, …] tensor goes to the model as one array ----------

#: Row codes of a response block's status (schemas.blocks.DECLINE_CODES).
_EXPIRED, _BAD_INPUT, _UNSUPPORTED = 2, 3, 4


def screen_block(block: QueryBlock, task: TaskSpec, now_ms: int) -> np.ndarray[Any, Any]:
    """Per row of `block`: 0 if the participant may answer it, else its decline code
    (schemas.blocks.DECLINE_CODES). O(1) numpy calls per block, whatever N.

    The same checks as `prepare` makes per query: the task, the deadline, the input's shape
    and (after input_scale) its finiteness and the task's value range."""
    n = len(block)
    status = np.zeros(n, dtype=np.uint8)
    if block.task != task.task:
        status[:] = _UNSUPPORTED
        return status
    if tuple(block.inputs.shape[1:]) != tuple(task.input_shape):
        status[:] = _BAD_INPUT
        return status
    status[block.deadline_ms <= now_ms] = _EXPIRED
    bad = _bad_rows(block.inputs.reshape(n, -1), block.input_scale or 1.0, task)
    status[(status == 0) & bad] = _BAD_INPUT
    return status


def _bad_rows(flat: np.ndarray[Any, Any], scale: float, task: TaskSpec
              ) -> np.ndarray[Any, Any]:
    """Rows not finite or outside the task's range. Whole-block reductions first (~10 µs at
    [1024, 64]); the per-row ones (~200 µs: numpy reduces short rows slowly) only when the
    block has a bad value somewhere."""
    low = -np.inf if task.input_min is None else task.input_min
    high = np.inf if task.input_max is None else task.input_max
    if flat.size == 0:
        return np.zeros(len(flat), dtype=bool)
    with np.errstate(invalid="ignore", over="ignore"):
        if bool(np.isfinite(flat).all()) and low <= float(flat.min()) * scale and (
                float(flat.max()) * scale <= high):
            return np.zeros(len(flat), dtype=bool)
        bad: np.ndarray[Any, Any] = ~np.isfinite(flat).all(axis=1)
        bad |= (flat.min(axis=1) * scale < low) | (flat.max(axis=1) * scale > high)
    return bad


def answer_block(engine: InferenceEngine, block: QueryBlock, status: np.ndarray[Any, Any]
                 ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Released outputs [N, C] for the rows `status` leaves at 0 (the others zero), and the
    final status: a row whose output is not finite is declined as bad_input, never signed.

    The participant sets budget_exhausted (1) or quota_exhausted (5) rows in `status`
    before calling; only rows still at 0 are computed (and spend privacy)."""
    status = status.copy()
    ok = status == 0
    outputs = np.zeros((len(block), engine.spec.num_classes), dtype=np.float32)
    if ok.any():
        inputs = block.model_inputs()
        computed = engine.infer(inputs if ok.all() else inputs[ok])
        usable = np.asarray(usable_outputs(computed, int(ok.sum()), engine.spec.num_classes))
        rows = np.flatnonzero(ok)
        outputs[rows[usable]] = computed[usable] if computed.ndim == 2 else 0
        status[rows[~usable]] = _BAD_INPUT
    return outputs, status


def respond_block(block: QueryBlock, outputs: np.ndarray[Any, Any],
                  status: np.ndarray[Any, Any], signer: Signer, *, partition: int,
                  produced_at_ms: int, details: dict[int, str] | None = None) -> bytes:
    """The signed response block record answering `block` row for row."""
    response = ResponseBlock(
        signer.participant_id, uuid.uuid4().hex, signer.spec.task, signer.spec.version,
        signer.privacy, produced_at_ms, partition, block.block_id, block.query_ids,
        outputs, status, details or {})
    return sign_response_block(encode_response_block(response), signer.key)
