"""The participant's batch path, without Kafka: query blocks → one host batch → device →
model (one model, or K teachers in one vmapped call) → the bounded vector (softmax, or the
vote histogram) → clip → noise → host → one signed response block per query partition.

`prepare` and `assemble` are plain functions over bytes so that the participant service
and `fi-stream bench engine` run exactly the same code. Both are O(1) numpy calls per
block (a block of 1,024 rows costs about what a block of one does in Python); only
declined rows with a detail cost Python each. The noise generator is seeded per batch from
the OS entropy pool and the seed is never published (DESIGN §5).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from torch import nn

from fi_stream.block_signing import sign_response_block
from fi_stream.models import ModelSpec
from fi_stream.privacy import Mechanism, release
from fi_stream.quota import Quota
from fi_stream.screening import (
    ANSWERED,
    BAD_INPUT,
    BUDGET_EXHAUSTED,
    QUOTA_EXHAUSTED,
    Array,
    Screened,
    screen,
    screen_batch,
)
from schemas import DecodeError, Privacy, TaskSpec
from schemas.blocks import (
    DECLINE_CODES,
    MAX_BLOCK,
    QueryBlock,
    ResponseBlock,
    encode_response_block,
)
from schemas.blocks.codec import QueryParts, query_block_of, query_block_parts

Precision = Literal["fp32", "bf16"]
#: The detail of a row whose released output is not finite (never signed).
NOT_FINITE = "bad_input: the model's output for this input is not finite"
#: Longest detail a response block carries (schemas.blocks RowDetail).
MAX_DETAIL = 500


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
    """One micro-batch after decoding. Its rows are every row of every decoded block, in
    record order (`spans`); batch row r is declined already when `status[r]` is not 0.
    `answerable` (batch rows, ascending) are the rows to compute, `inputs[j]` the model
    input of `answerable[j]`."""

    spans: list[tuple[int, str, int]] = field(default_factory=list)  # (partition, block, rows)
    status: Array = field(default_factory=lambda: np.zeros(0, np.uint8))
    details: dict[int, str] = field(default_factory=dict)  # batch row → why declined
    answerable: Array = field(default_factory=lambda: np.zeros(0, np.intp))
    inputs: Array | None = None
    broken: list[tuple[int, DecodeError]] = field(default_factory=list)  # (item index, why)
    #: Items whose block id its partition already had in this batch: the first one's
    #: answers stand for both (a response record names each block once).
    repeats: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.status)

    def declined(self) -> dict[str, int]:
        """Rows declined so far, by reason (before the budget is asked)."""
        counts = np.bincount(self.status, minlength=len(DECLINE_CODES)).tolist()
        return {DECLINE_CODES[k]: c for k, c in enumerate(counts) if k and c}


def prepare(items: Sequence[tuple[int, bytes | None]], spec: ModelSpec, now_ms: int,
            max_deadline_ms: int | None = None, quota: Quota | None = None) -> Prepared:
    """Decode (partition, value) items, each a query block; screen their rows
    (fi_stream.screening) and stack the answerable rows' inputs into one array.

    A row is answered only if the aggregator accepts it too (the checks of
    fi_stream.validation against the spec this participant publishes): anything else is
    declined with the exact reason, before any privacy is spent. `quota(item index, block,
    rows)`: how many of a block's otherwise answerable rows its client may be answered
    (fi_stream.quota); the rest: `quota_exhausted`.
    """
    out = Prepared()
    seen: set[tuple[int, str]] = set()
    blocks: list[QueryParts] = []
    indices: list[int] = []
    for index, (partition, raw) in enumerate(items):
        try:
            block = query_block_parts(raw)
        except DecodeError as exc:
            out.broken.append((index, exc))
            continue
        if (partition, block.block_id) in seen:
            out.repeats.append(index)
            continue
        seen.add((partition, block.block_id))
        blocks.append(block)
        indices.append(index)
        out.spans.append((partition, block.block_id, block.rows))
    if not blocks:
        return out
    screened = screen_batch(blocks, spec.task_spec(), now_ms, max_deadline_ms)
    if quota is not None and screened.inputs is not None:
        _charge(screened, blocks, indices, quota)
    out.status, out.details = screened.status, screened.details
    if screened.inputs is not None:
        out.answerable = np.flatnonzero(out.status == ANSWERED)
        out.inputs = screened.inputs
    return out


def _charge(screened: Screened, blocks: list[QueryParts], indices: list[int],
            quota: Quota) -> None:
    """Ask `quota` for each block's answerable rows, in record order (only blocks with
    some); decline the rows past its grant (quota_exhausted) and drop their inputs."""
    status, inputs = screened.status, screened.inputs
    answerable = np.flatnonzero(status == ANSWERED)
    starts = np.cumsum([0] + [p.rows for p in blocks])
    counts = np.diff(np.searchsorted(answerable, starts)).tolist()
    for i, count in enumerate(counts):
        if not count:
            continue
        block = blocks[i]
        granted = quota(indices[i], query_block_of(block), count)
        if granted < count:
            first = int(starts[i])
            rows = (np.flatnonzero(status[first:first + block.rows] == ANSWERED)
                    + first)[granted:]
            status[rows] = QUOTA_EXHAUSTED
            screened.details.update(dict.fromkeys(rows.tolist(), (
                f"client {block.client_id} used its share of this participant's budget")))
    kept = status[answerable] == ANSWERED
    if not kept.all():
        screened.inputs = inputs[kept] if kept.any() and inputs is not None else None


def usable_outputs(outputs: Array, rows: int, num_classes: int) -> Array:
    """Per row: may it be signed? (finite, and the outputs are (rows, num_classes)). A
    model can turn a valid input into NaN (e.g. logits that overflow); such a row is
    declined as bad_input, never signed."""
    if outputs.ndim != 2 or outputs.shape != (rows, num_classes):
        return np.zeros(rows, dtype=bool)
    if bool(np.isfinite(outputs).all()):  # one reduction (numpy reduces short rows slowly)
        return np.ones(rows, dtype=bool)
    ok: Array = np.asarray(np.isfinite(outputs).all(axis=1))
    return ok


@dataclass(frozen=True, kw_only=True)
class Signer:
    participant_id: str
    spec: ModelSpec
    privacy: Privacy
    key: Ed25519PrivateKey


def assemble(prepared: Prepared, answered: Sequence[int], outputs: Array,
             signer: Signer, produced_at_ms: int) -> list[tuple[int, bytes]]:
    """(partition, signed response block) per query partition of the batch: one record
    answering every row of every block of that partition, in record order (a second one
    only past MAX_BLOCK rows).

    `answered`: indices into `prepared.answerable` that are answered, row j of `outputs`
    for answered[j]; the other answerable rows were over the privacy budget
    (budget_exhausted). A row whose output is not finite is declined (bad_input).
    """
    status, rows, details = settle(prepared, answered, outputs, signer.spec.num_classes)
    starts = np.cumsum([0] + [n for _, _, n in prepared.spans])
    records = _records(prepared.spans)
    notes = _details_by_record(details, starts, records)
    out: list[tuple[int, bytes]] = []
    for (partition, members), note in zip(records, notes, strict=True):
        pieces = [slice(int(starts[i]), int(starts[i + 1])) for i in members]
        if members[-1] - members[0] == len(members) - 1:  # consecutive: one view
            whole = slice(pieces[0].start, pieces[-1].stop)
            block_out, block_status = rows[whole], status[whole]
        else:
            block_out = np.concatenate([rows[p] for p in pieces])
            block_status = np.concatenate([status[p] for p in pieces])
        spans = [(prepared.spans[i][1], prepared.spans[i][2]) for i in members]
        out.append((partition, sign_response(signer, partition, spans, block_out,
                                             block_status, note, produced_at_ms)))
    return out


def settle(prepared: Prepared, answered: Sequence[int], outputs: Array, num_classes: int
           ) -> tuple[Array, Array, dict[int, str]]:
    """Every batch row's final status, its output row (zero unless answered) and the
    details: answerable rows not in `answered` are budget_exhausted."""
    status = prepared.status.copy()
    rows = np.zeros((len(status), num_classes), dtype=np.float32)
    details = dict(prepared.details)
    status[prepared.answerable] = BUDGET_EXHAUSTED
    picked = np.asarray(answered, dtype=np.intp).reshape(-1)
    if picked.size:
        chosen = prepared.answerable[picked]
        usable = usable_outputs(outputs, len(picked), num_classes)
        status[chosen] = BAD_INPUT
        status[chosen[usable]] = ANSWERED
        if usable.any():
            rows[chosen[usable]] = outputs[usable]
        details.update(dict.fromkeys(chosen[~usable].tolist(), NOT_FINITE))
    return status, rows, details


def _records(spans: list[tuple[int, str, int]]) -> list[tuple[int, list[int]]]:
    """(partition, span indices) per response record: one per partition, by partition, the
    spans in record order; a partition past MAX_BLOCK rows gets another record."""
    groups: dict[int, list[list[int]]] = {}
    filled: dict[int, int] = {}
    for i, (partition, _, n) in enumerate(spans):
        records = groups.setdefault(partition, [[]])
        if records[-1] and filled[partition] + n > MAX_BLOCK:
            records.append([])
            filled[partition] = 0
        records[-1].append(i)
        filled[partition] = filled.get(partition, 0) + n
    return [(p, members) for p in sorted(groups) for members in groups[p]]


def _details_by_record(details: dict[int, str], starts: Array,
                       records: list[tuple[int, list[int]]]) -> list[dict[int, str]]:
    """The details (batch row → text) of each record, keyed by record row."""
    out: list[dict[int, str]] = [{} for _ in records]
    if not details:
        return out
    where: dict[int, tuple[int, int]] = {}  # span → (record, its first record row)
    for r, (_, members) in enumerate(records):
        at = 0
        for i in members:
            where[i] = (r, at)
            at += int(starts[i + 1] - starts[i])
    keys = np.fromiter(details, dtype=np.int64, count=len(details))
    spans = (np.searchsorted(starts, keys, side="right") - 1).tolist()
    for row, span, text in zip(keys.tolist(), spans, details.values(), strict=True):
        record, base = where[span]
        out[record][base + row - int(starts[span])] = text[:MAX_DETAIL]
    return out


def sign_response(signer: Signer, partition: int, spans: list[tuple[str, int]],
                  outputs: Array, status: Array, details: dict[int, str],
                  produced_at_ms: int) -> bytes:
    """The signed response block record: `spans` [(block_id, rows)] answered row for row."""
    response = ResponseBlock(
        signer.participant_id, uuid.uuid4().hex, signer.spec.task, signer.spec.version,
        signer.privacy, produced_at_ms, partition, spans, outputs, status, details)
    return sign_response_block(encode_response_block(response), signer.key)


# -- one block at a time (fi_stream.bench_engine_blocks), over the same screening ------------

def screen_block(block: QueryBlock, task: TaskSpec, now_ms: int,
                 max_deadline_ms: int | None = None) -> Array:
    """Per row of `block`: 0 if the participant may answer it, else its decline code
    (fi_stream.screening.screen's status)."""
    return screen(block, task, now_ms, max_deadline_ms).status


def answer_block(engine: InferenceEngine, block: QueryBlock, status: Array
                 ) -> tuple[Array, Array]:
    """Released outputs [N, C] for the rows `status` leaves at 0 (the others zero), and the
    final status: a row whose output is not finite is declined as bad_input, never signed.

    The caller sets budget_exhausted (1) or quota_exhausted (5) rows in `status` before
    calling; only rows still at 0 are computed (and spend privacy)."""
    status = status.copy()
    ok = status == ANSWERED
    outputs = np.zeros((len(block), engine.spec.num_classes), dtype=np.float32)
    if ok.any():
        inputs = block.model_inputs()
        computed = engine.infer(inputs if ok.all() else inputs[ok])
        usable = usable_outputs(computed, int(ok.sum()), engine.spec.num_classes)
        rows = np.flatnonzero(ok)
        if usable.any():
            outputs[rows[usable]] = computed[usable]
        status[rows[~usable]] = BAD_INPUT
    return outputs, status


def respond_block(block: QueryBlock, outputs: Array, status: Array, signer: Signer, *,
                  partition: int, produced_at_ms: int,
                  details: dict[int, str] | None = None) -> bytes:
    """The signed response block record answering `block` (one span) row for row."""
    return sign_response(signer, partition, [(block.block_id, len(block))], outputs, status,
                         details or {}, produced_at_ms)
