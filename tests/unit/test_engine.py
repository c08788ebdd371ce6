"""The participant's batch path without Kafka: decode query blocks, decline, compute, sign
one response block per partition; the noise seed from the OS's CSPRNG; the teacher
ensemble as one batched call; answer reuse."""

from __future__ import annotations

import secrets
from pathlib import Path

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fi_stream.block_signing import verify_response_block
from fi_stream.engine import InferenceEngine, Signer, assemble, prepare
from fi_stream.models import ModelSpec, build, load_model, save_model
from fi_stream.models.ensemble import TeacherEnsemble
from fi_stream.privacy import Mechanism, release
from fi_stream.reuse import AnswerCache, answer_batch
from fi_stream.signing import public_key_bytes
from schemas import Privacy
from schemas.blocks import decode_response_block, encode_query_block, query_block

SPEC = ModelSpec(architecture="digits-mlp", task="digits", version="1", input_shape=(64,),
                 num_classes=10)
NOW = 1_000_000


def q(block_id: str, *, task: str = "digits", deadline: int | np.ndarray = NOW + 5000,
      x: np.ndarray | None = None, rows: int = 1, **kw: object) -> bytes:
    x = np.full((rows, 64), 0.5, np.float32) if x is None else x
    return encode_query_block(query_block(block_id, task, x, created_at_ms=NOW,
                                          deadline_ms=deadline, **kw))  # type: ignore[arg-type]


def _reasons(raw: bytes) -> dict[str, str]:
    block = decode_response_block(raw)
    return {qid: block.reason(r) for r, qid in enumerate(block.query_ids)}


def test_prepare_sorts_rows_into_answerable_declined_and_dead_letters() -> None:
    nan = np.full((1, 64), np.nan, np.float32)
    two = np.full((2, 64), 0.5, np.float32)
    two[1, 0] = np.inf
    items = [(0, q("ok1")), (1, q("other", task="cifar")), (0, q("old", deadline=NOW - 1)),
             (1, q("nan", x=nan)), (0, q("short", x=np.zeros((1, 8), np.float32))),
             (1, b"garbage"), (1, q("ok2", x=two))]
    p = prepare(items, SPEC, NOW)
    assert [(part, b, n) for part, b, n in p.spans] == [
        (0, "ok1", 1), (1, "other", 1), (0, "old", 1), (1, "nan", 1), (0, "short", 1),
        (1, "ok2", 2)]
    assert p.answerable.tolist() == [0, 5]  # batch rows: ok1.0 and ok2.0
    assert p.inputs is not None and p.inputs.shape == (2, 64) and p.inputs.flags.writeable
    assert p.status.tolist() == [0, 4, 2, 3, 3, 0, 3]
    assert p.declined() == {"expired": 1, "bad_input": 3, "unsupported_task": 1}
    assert p.details[6] == p.details[3] == "bad_input: input contains NaN or Inf"
    assert p.details[4].startswith("bad_input: input <f4 [8], task digits takes <f4 [64]")
    assert 2 not in p.details  # expired: no detail, as before
    assert p.details[1].startswith("this participant serves task digits")
    assert [(i, e.reason) for i, e in p.broken] == [(5, "malformed")]


def test_assemble_signs_one_block_per_partition_and_declines_what_is_over_budget() -> None:
    key = Ed25519PrivateKey.generate()
    signer = Signer(participant_id="p1", spec=SPEC, key=key,
                    privacy=Privacy(clip_norm=1.0, noise_multiplier=0.5))
    p = prepare([(0, q("a")), (1, q("b", rows=2)), (0, q("x", task="cifar"))], SPEC, NOW)
    engine = InferenceEngine(build(SPEC), SPEC, Mechanism(clip_norm=1.0, noise_multiplier=0.5),
                             torch.device("cpu"))
    assert p.inputs is not None and p.answerable.tolist() == [0, 1, 2]
    outputs = engine.infer(p.inputs[:2])
    assert outputs.shape == (2, 10) and bool((np.linalg.norm(outputs, axis=1) > 0).all())
    encoded = dict(assemble(p, [0, 1], outputs, signer, NOW + 1))
    blocks = {part: decode_response_block(raw) for part, raw in encoded.items()}
    assert blocks[0].spans == [("a", 1), ("x", 1)] and blocks[1].spans == [("b", 2)]
    assert _reasons(encoded[0]) == {"a.0": "answered", "x.0": "unsupported_task"}
    assert _reasons(encoded[1]) == {"b.0": "answered", "b.1": "budget_exhausted"}
    assert blocks[0].details == {1: "this participant serves task digits, not cifar"}
    assert all(verify_response_block(b, public_key_bytes(key)) for b in blocks.values())
    assert np.array_equal(blocks[1].outputs[:1], outputs[1:2])
    assert np.array_equal(blocks[0].outputs[0], outputs[0]) and not blocks[0].outputs[1].any()
    assert all(b.produced_at_ms == NOW + 1 and b.participant_id == "p1"
               for b in blocks.values())


def test_a_block_repeated_in_its_partition_is_answered_once() -> None:
    p = prepare([(0, q("a")), (1, q("a")), (0, q("a"))], SPEC, NOW)
    assert p.repeats == [2] and [s[:2] for s in p.spans] == [(0, "a"), (1, "a")]


def test_quota_declines_the_rows_past_the_clients_share() -> None:
    asked: list[tuple[int, str, int]] = []

    def quota(index: int, block: object, rows: int) -> int:
        asked.append((index, block.client_id, rows))  # type: ignore[attr-defined]
        return 2

    x = np.full((4, 64), 0.5, np.float32)
    deadlines = np.array([NOW + 5000, NOW - 1, NOW + 5000, NOW + 5000])
    p = prepare([(3, q("b", x=x, deadline=deadlines, client_id="greedy"))], SPEC, NOW,
                quota=quota)
    assert asked == [(0, "greedy", 3)]  # only the rows that could be answered
    assert p.status.tolist() == [0, 2, 0, 5] and p.answerable.tolist() == [0, 2]
    assert p.inputs is not None and len(p.inputs) == 2
    assert "client greedy used its share" in p.details[3]
    nothing = prepare([(0, q("c", x=x))], SPEC, NOW, quota=lambda *_: 0)
    assert nothing.status.tolist() == [5] * 4 and nothing.inputs is None


def test_uint8_and_half_blocks_reach_the_model_as_float32() -> None:
    spec = SPEC.model_copy(update={"input_range": (0.0, 1.0)})
    counts = np.full((2, 64), 16, np.uint8)
    counts[1, 0] = 17  # 17/16 > 1.0
    half = np.full((1, 64), 0.25, np.float16)
    p = prepare([(0, q("u", x=counts, input_scale=1 / 16)), (0, q("h", x=half))], spec, NOW)
    assert p.status.tolist() == [0, 3, 0] and p.inputs is not None
    assert p.inputs.dtype == np.float32 and np.allclose(p.inputs[0], 1.0)
    assert np.allclose(p.inputs[1], 0.25)
    assert "above the task's maximum 1" in p.details[1]


def test_a_partition_past_max_block_rows_gets_a_second_record(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fi_stream.engine.MAX_BLOCK", 3)
    signer = Signer(participant_id="p1", spec=SPEC, key=Ed25519PrivateKey.generate(),
                    privacy=Privacy(clip_norm=1.0, noise_multiplier=0.5))
    p = prepare([(0, q("a", rows=2)), (0, q("b", rows=2)), (1, q("c")), (0, q("d"))],
                SPEC, NOW)
    encoded = assemble(p, [], np.zeros((0, 10), np.float32), signer, NOW)
    assert [(part, decode_response_block(raw).spans) for part, raw in encoded] == [
        (0, [("a", 2)]), (0, [("b", 2), ("d", 1)]), (1, [("c", 1)])]


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


def test_the_naive_baseline_answers_one_row_at_a_time() -> None:
    from consumers.naive import NaiveParticipantService

    mech = Mechanism(noise_multiplier=1.0)
    naive = object.__new__(NaiveParticipantService)
    naive.engine = InferenceEngine(build(SPEC), SPEC, mech, torch.device("cpu"))
    naive.cache, naive.spec = AnswerCache(mech, max_entries=100), SPEC
    calls: list[int] = []
    infer = naive.engine.infer

    def counted(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        return infer(x)

    naive.engine.infer = counted  # type: ignore[method-assign,assignment]
    x = np.random.default_rng(0).random((3, 64), dtype=np.float32)
    got = naive._answer(np.stack([x[0], x[1], x[0], x[2]]), lambda n: n if len(calls) < 2 else 0)
    assert calls == [1, 1] and got.answered == [0, 1, 2] and (got.fresh, got.reused) == (2, 1)
    assert np.array_equal(got.outputs[0], got.outputs[2])  # the repeat: the cached answer


def test_the_copycat_republishes_whole_spans_rekeyed() -> None:
    from consumers.copycat import _rows_of
    from schemas.blocks import ResponseBlock

    outputs = np.zeros((4, 10), np.float32)
    outputs[[0, 3]] = 0.1
    block = ResponseBlock("p", "b", "digits", "1", Privacy(clip_norm=1, noise_multiplier=1),
                          1, 0, [("a", 1), ("b", 2), ("c", 1)], outputs,
                          np.array([0, 3, 1, 0], np.uint8), {1: "why"})
    picks = [s for s in block.span_rows() if s[0] != "a"]
    rows, status, details = _rows_of(block, picks)
    assert status.tolist() == [3, 1, 0] and details == {0: "why"}
    assert np.array_equal(rows, outputs[1:])
