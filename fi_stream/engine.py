"""The participant's batch path, without Kafka: records → one host batch → device →
softmax → clip → noise → host → one signed ResponseBatch per partition.

`prepare` and `assemble` are plain functions over bytes so that the participant service
and `fi-stream bench engine` run exactly the same code. The noise generator is seeded per
batch from the OS entropy pool and the seed is never published (DESIGN §5).
"""

from __future__ import annotations

import secrets
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from torch import nn

from fi_stream.models import ModelSpec
from fi_stream.privacy import GaussianMechanism, privatize
from fi_stream.signing import sign_batch
from schemas import (
    Decline,
    DeclineReason,
    DecodeError,
    Privacy,
    ResponseBatch,
    Tensor,
    decode_query_view,
    encode,
)

Precision = Literal["fp32", "bf16"]


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class InferenceEngine:
    """The model on its device; one caller of `infer` at a time (a worker thread or the
    loop, see ParticipantService._publish)."""

    def __init__(self, module: nn.Module, spec: ModelSpec, mechanism: GaussianMechanism,
                 device: torch.device, precision: Precision = "fp32",
                 compile: bool = False) -> None:
        self.spec = spec
        self.mechanism = mechanism
        self.device = device
        self.precision = precision
        module = module.to(device).eval()
        self.module: nn.Module = torch.compile(module) if compile else module  # type: ignore[assignment]

    def infer(self, batch: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """(N, *input_shape) float32 → (N, classes) float32 noised probability vectors."""
        generator = torch.Generator(device=self.device)
        generator.manual_seed(secrets.randbits(63))
        with torch.inference_mode():
            x = torch.from_numpy(batch)
            if self.device.type == "cuda":
                x = x.pin_memory().to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=torch.bfloat16,
                                enabled=self.precision == "bf16"):
                logits = self.module(x)
            probs = torch.softmax(logits.float(), dim=-1)
            noised = privatize(probs, self.mechanism, generator)
            out: np.ndarray[Any, Any] = noised.cpu().numpy()
        return out


@dataclass
class Prepared:
    """One micro-batch after decoding: what to compute, what to decline, what is broken."""

    answerable: list[tuple[int, str]] = field(default_factory=list)  # (partition, query_id)
    inputs: np.ndarray[Any, Any] | None = None
    declined: dict[int, list[Decline]] = field(default_factory=lambda: defaultdict(list))
    broken: list[tuple[int, DecodeError]] = field(default_factory=list)  # (item index, why)

    def decline(self, partition: int, query_id: str, reason: DeclineReason) -> None:
        self.declined[partition].append(Decline(query_id=query_id, reason=reason))


def prepare(items: Sequence[tuple[int, bytes | None]], spec: ModelSpec, now_ms: int
            ) -> Prepared:
    """Decode (partition, value) items; O(1) numpy calls for the whole batch's inputs."""
    out = Prepared()
    shape = tuple(spec.input_shape)
    chunks: list[bytes] = []
    for index, (partition, raw) in enumerate(items):
        try:
            q = decode_query_view(raw)
        except DecodeError as exc:
            out.broken.append((index, exc))
            continue
        if q.task != spec.task:
            out.decline(partition, q.query_id, "unsupported_task")
        elif q.deadline_ms <= now_ms:
            out.decline(partition, q.query_id, "expired")  # no privacy spent on it
        elif q.shape != shape or q.dtype != "<f4":
            out.decline(partition, q.query_id, "bad_input")
        else:
            out.answerable.append((partition, q.query_id))
            chunks.append(q.data)
    if chunks:
        # bytearray: one copy that torch may write to (frombuffer over bytes is read-only)
        inputs = np.frombuffer(bytearray(b"".join(chunks)), dtype=np.float32).reshape(
            len(chunks), *shape)
        flat = inputs.reshape(len(chunks), -1)
        finite: list[bool] = np.isfinite(flat).all(axis=1, keepdims=False).reshape(-1).tolist()
        if not all(finite):
            for (partition, qid), ok in zip(out.answerable, finite, strict=True):
                if not ok:
                    out.decline(partition, qid, "bad_input")
            out.answerable = [a for a, ok in zip(out.answerable, finite, strict=True) if ok]
            inputs = inputs[finite]
        out.inputs = inputs
    return out


@dataclass(frozen=True, kw_only=True)
class Signer:
    participant_id: str
    spec: ModelSpec
    privacy: Privacy
    key: Ed25519PrivateKey


def assemble(prepared: Prepared, granted: int, outputs: np.ndarray[Any, Any],
             signer: Signer, produced_at_ms: int) -> list[tuple[int, bytes]]:
    """(partition, encoded signed ResponseBatch) per partition with anything to say.

    The first `granted` answerable queries are answered (rows of `outputs`); the rest were
    over the privacy budget and are declined.
    """
    rows: dict[int, list[int]] = defaultdict(list)
    ids: dict[int, list[str]] = defaultdict(list)
    for row, (partition, qid) in enumerate(prepared.answerable[:granted]):
        rows[partition].append(row)
        ids[partition].append(qid)
    declined = {p: list(d) for p, d in prepared.declined.items()}
    for partition, qid in prepared.answerable[granted:]:
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
