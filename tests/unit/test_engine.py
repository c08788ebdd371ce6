"""The participant's batch path without Kafka: decode, decline, compute, sign; the noise
seed from the OS's CSPRNG; the teacher ensemble as one batched call; answer reuse."""

from __future__ import annotations

import secrets
from pathlib import Path

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fi_stream.engine import InferenceEngine, Signer, assemble, prepare
from fi_stream.models import ModelSpec, build, load_model, save_model
from fi_stream.models.ensemble import TeacherEnsemble
from fi_stream.privacy import Mechanism, release
from fi_stream.reuse import AnswerCache, answer_batch
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
    engine = InferenceEngine(build(SPEC), SPEC, Mechanism(clip_norm=1.0, noise_multiplier=0.5),
                             torch.device("cpu"))
    assert p.inputs is not None
    outputs = engine.infer(p.inputs[:2])
    assert outputs.shape == (2, 10) and bool((np.linalg.norm(outputs, axis=1) > 0).all())
    encoded = dict(assemble(p, [0, 1], outputs, signer, NOW + 1))
    batches = {part: decode(raw, ResponseBatch) for part, raw in encoded.items()}
    assert batches[0].answered == ["a"] and batches[1].answered == ["b"]
    assert [(d.query_id, d.reason) for d in batches[1].declined] == [("c", "budget_exhausted")]
    assert all(verify_batch(b, public_key_bytes(key)) for b in batches.values())
    assert np.array_equal(batches[1].outputs.to_numpy(), outputs[1:2])


def test_each_batch_is_seeded_from_the_os_csprng(monkeypatch: pytest.MonkeyPatch) -> None:
    """The noise generator is seeded per batch from `secrets` (the OS's CSPRNG), not from
    torch's global state or a fixed seed; the seed appears in no output."""
    engine = InferenceEngine(build(SPEC), SPEC, Mechanism(noise_multiplier=0.5),
                             torch.device("cpu"))
    x = np.random.default_rng(0).random((3, 64), dtype=np.float32)
    a, b = engine.infer(x), engine.infer(x)
    assert not np.array_equal(a, b)  # fresh seed per batch
    seeds: list[int] = []
    real = secrets.randbits

    def spy(k: int) -> int:
        seeds.append(real(k))
        return seeds[-1]

    monkeypatch.setattr("fi_stream.engine.secrets.randbits", spy)
    torch.manual_seed(0)  # global torch state must not matter
    out = engine.infer(x)
    assert len(seeds) == 1 and seeds[0].bit_length() > 32
    with torch.inference_mode():
        expected = release(engine.module(torch.from_numpy(x)), engine.mechanism,
                           torch.Generator().manual_seed(seeds[0])).numpy()
    assert np.array_equal(out, expected)


def _ensemble(k: int) -> TeacherEnsemble:
    gen = torch.Generator().manual_seed(1)
    spec = SPEC.model_copy(update={"teachers": k})
    return TeacherEnsemble.from_modules([build(spec, generator=gen) for _ in range(k)], 10)


def test_the_ensemble_is_one_batched_call_equal_to_k_separate_models() -> None:
    k = 5
    gen = torch.Generator().manual_seed(1)
    modules = [build(SPEC, generator=gen).eval() for _ in range(k)]
    ensemble = TeacherEnsemble.from_modules(modules, 10)
    x = torch.rand(7, 64, generator=gen)
    with torch.inference_mode():
        each = torch.stack([m(x) for m in modules])
        assert torch.allclose(ensemble.logits(x), each, atol=1e-5)
        hist = ensemble(x)
    votes = each.argmax(-1)
    expected = torch.stack([torch.bincount(votes[:, n], minlength=10) for n in range(7)]) / k
    assert torch.equal(hist, expected.float())
    assert torch.allclose(hist.sum(1), torch.ones(7))


def test_a_teacher_ensemble_round_trips_through_safetensors(tmp_path: Path) -> None:
    ensemble = _ensemble(4)
    spec = SPEC.model_copy(update={"teachers": 4})
    save_model(tmp_path, ensemble, spec)
    assert not list(tmp_path.glob("*.pt")) and (tmp_path / "model.safetensors").exists()
    loaded, spec2 = load_model(tmp_path)
    assert isinstance(loaded, TeacherEnsemble) and spec2.teachers == 4
    x = torch.rand(5, 64)
    with torch.inference_mode():
        assert torch.equal(loaded(x), ensemble(x))


def test_teachers_release_a_noised_vote_histogram() -> None:
    spec = SPEC.model_copy(update={"teachers": 4})
    mech = Mechanism(name="teachers", noise_multiplier=0.0, teachers=4)
    engine = InferenceEngine(_ensemble(4), spec, mech, torch.device("cpu"))
    out = engine.infer(np.random.default_rng(0).random((6, 64), dtype=np.float32))
    assert np.allclose(out.sum(1), 1.0) and set(np.unique(out * 4)) <= {0, 1, 2, 3, 4}


def test_a_repeated_input_gets_the_identical_noised_answer_at_no_cost() -> None:
    mech = Mechanism(noise_multiplier=1.0)
    engine = InferenceEngine(build(SPEC), SPEC, mech, torch.device("cpu"))
    cache = AnswerCache(mech, max_entries=100)
    spent: list[int] = []

    def reserve(n: int) -> int:
        spent.append(n)
        return n

    rng = np.random.default_rng(0)
    x, y = rng.random((2, 64), dtype=np.float32)
    first = answer_batch(np.stack([x, y, x]), cache, reserve, engine.infer, 10)
    assert first.answered == [0, 1, 2] and (first.fresh, first.reused) == (2, 1)
    assert spent == [2]  # x twice in one batch: paid once, answered identically
    assert np.array_equal(first.outputs[0], first.outputs[2])
    again = answer_batch(np.stack([y, x]), cache, reserve, engine.infer, 10)
    assert (again.fresh, again.reused) == (0, 2) and spent == [2]  # no new spend at all
    assert np.array_equal(again.outputs, first.outputs[[1, 0]])  # never fresh noise


def test_reuse_is_bounded_and_keyed_by_the_mechanism() -> None:
    mech, other = Mechanism(noise_multiplier=1.0), Mechanism(noise_multiplier=2.0)
    cache = AnswerCache(mech, max_entries=2)
    for i in range(3):
        cache.put(cache.key(bytes([i])), np.full(10, i, np.float32))
    assert len(cache) == 2 and cache.get(cache.key(bytes([0]))) is None
    assert AnswerCache(other, 2).key(b"x") != cache.key(b"x")


def test_inputs_over_budget_are_declined_and_not_cached() -> None:
    mech = Mechanism(noise_multiplier=1.0)
    engine = InferenceEngine(build(SPEC), SPEC, mech, torch.device("cpu"))
    cache = AnswerCache(mech, max_entries=100)
    x = np.random.default_rng(0).random((3, 64), dtype=np.float32)
    got = answer_batch(x, cache, lambda n: 1, engine.infer, 10)
    assert got.answered == [0] and got.outputs.shape == (1, 10) and len(cache) == 1
