"""The participant's batch path without Kafka: decode, decline, compute, sign."""

from __future__ import annotations

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fi_stream.engine import InferenceEngine, Signer, assemble, prepare
from fi_stream.models import ModelSpec, build
from fi_stream.privacy import GaussianMechanism
from fi_stream.signing import public_key_bytes, verify_batch
from schemas import Privacy, Query, ResponseBatch, Tensor, decode, encode

SPEC = ModelSpec(architecture="digits-mlp", task="digits", version="1", input_shape=(64,),
                 num_classes=10)
NOW = 1_000_000


def q(qid: str, *, task: str = "digits", deadline: int = NOW + 5000,
      x: np.ndarray | None = None) -> bytes:
    x = np.full(64, 0.5, np.float32) if x is None else x
    return encode(Query(query_id=qid, task=task, input=Tensor.from_numpy(x),
                        created_at_ms=NOW, deadline_ms=deadline))


def test_prepare_sorts_queries_into_answers_declines_and_dead_letters() -> None:
    nan = np.full(64, np.nan, np.float32)
    items = [(0, q("ok1")), (1, q("other", task="cifar")), (0, q("old", deadline=NOW - 1)),
             (1, q("nan", x=nan)), (0, q("short", x=np.zeros(8, np.float32))),
             (1, b"garbage"), (1, q("ok2"))]
    p = prepare(items, SPEC, NOW)
    assert p.answerable == [(0, "ok1"), (1, "ok2")]
    assert p.inputs is not None and p.inputs.shape == (2, 64) and p.inputs.flags.writeable
    declined = {d.query_id: d.reason for ds in p.declined.values() for d in ds}
    assert declined == {"other": "unsupported_task", "old": "expired", "nan": "bad_input",
                        "short": "bad_input"}
    assert [(i, e.reason) for i, e in p.broken] == [(5, "malformed")]


def test_assemble_signs_one_batch_per_partition_and_declines_what_is_over_budget() -> None:
    key = Ed25519PrivateKey.generate()
    signer = Signer(participant_id="p1", spec=SPEC, key=key,
                    privacy=Privacy(clip_norm=1.0, noise_multiplier=0.5))
    p = prepare([(0, q("a")), (1, q("b")), (1, q("c"))], SPEC, NOW)
    engine = InferenceEngine(build(SPEC), SPEC, GaussianMechanism(clip_norm=1.0,
                                                                  noise_multiplier=0.5),
                             torch.device("cpu"))
    assert p.inputs is not None
    outputs = engine.infer(p.inputs[:2])
    assert outputs.shape == (2, 10) and bool((np.linalg.norm(outputs, axis=1) > 0).all())
    encoded = dict(assemble(p, 2, outputs, signer, NOW + 1))
    batches = {part: decode(raw, ResponseBatch) for part, raw in encoded.items()}
    assert batches[0].answered == ["a"] and batches[1].answered == ["b"]
    assert [(d.query_id, d.reason) for d in batches[1].declined] == [("c", "budget_exhausted")]
    assert all(verify_batch(b, public_key_bytes(key)) for b in batches.values())
    assert np.array_equal(batches[1].outputs.to_numpy(), outputs[1:2])
