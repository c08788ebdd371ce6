"""The checks every service shares (fi_stream.validation) and the defects they close:
poison pills, implausible answers, invalid queries, labels out of range."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from fi_stream.engine import Signer, assemble, prepare
from fi_stream.models import ModelSpec
from fi_stream.screening import BAD_INPUT
from fi_stream.validation import (
    FALSE_REJECTION,
    input_problems,
    label_problem,
    norm_bound,
    privacy_problem,
    query_problem,
    screen_rows,
    strategy_problem,
)
from schemas import Privacy, Query, TaskSpec, Tensor, decode
from schemas.blocks import (
    QueryBlockHeader,
    decode_query_block,
    decode_response_block,
    encode_query_block,
    query_block,
)
from schemas.blocks.frame import layout, pack

PRIVACY = Privacy(clip_norm=1.0, noise_multiplier=0.3)
SPEC = TaskSpec(task="digits", input_shape=(64,), input_min=0.0, input_max=1.0,
                num_classes=10)
MODEL = ModelSpec(architecture="digits-mlp", task="digits", version="1", input_shape=(64,),
                  num_classes=10, input_range=(0.0, 1.0))
NOW = 1_000_000


def query(x: np.ndarray, *, deadline: int = NOW + 5000, qid: str = "q1") -> Query:
    return Query(query_id=qid, task="digits", input=Tensor.from_numpy(x), created_at_ms=NOW,
                 deadline_ms=deadline)


# -- the row bound ---------------------------------------------------------------------------

def test_the_bound_is_clip_plus_the_chi_tail() -> None:
    t = math.sqrt(2 * math.log(1 / FALSE_REJECTION))
    assert norm_bound(1.0, 0.3, 10) == pytest.approx(1 + 0.3 * (math.sqrt(10) + t), rel=2e-5)
    assert norm_bound(1.0, 0.0, 10) == pytest.approx(1.0, rel=2e-5)  # no noise: the clip


def test_honest_rows_fail_the_bound_no_more_often_than_stated() -> None:
    """At a loose p = 1e-2 the empirical rate is measurable: the worst honest row (norm C
    exactly, then noise) exceeds the bound in well under 1 % of 200,000 draws."""
    rng = np.random.default_rng(0)
    d, sigma = 10, 0.3
    x = np.zeros(d)
    x[0] = 1.0
    rows = x + rng.normal(0, sigma, (200_000, d))
    rate = float((np.linalg.norm(rows, axis=1) > norm_bound(1.0, sigma, d, 1e-2)).mean())
    assert rate <= 1e-2


def test_screen_names_each_kind_of_implausible_row() -> None:
    rows = np.zeros((6, 10), np.float32)
    rows[0, 3] = 1.0  # a one-hot probability vector: fine
    rows[1] = -0.3  # negative entries, norm 0.95: within what noise gives
    rows[2, 0] = np.nan
    rows[3, 0] = np.inf
    rows[4, 0] = 1e6
    rows[5] = 3e38  # finite float32, norm overflows float64 only without rescaling
    assert screen_rows(rows, PRIVACY, 10) == [None, None, "non_finite", "non_finite",
                                              "implausible_norm", "implausible_norm"]
    assert screen_rows(rows[:2], PRIVACY, 7) == ["wrong_width"] * 2
    assert screen_rows(np.full((1, 10), 1e300), PRIVACY, None) == ["implausible_norm"]
    assert screen_rows(np.zeros((0, 10)), PRIVACY, 10) == []


def test_a_batch_must_declare_the_registered_privacy() -> None:
    assert privacy_problem(PRIVACY, PRIVACY) is None
    forged = Privacy(clip_norm=1.0, noise_multiplier=0.0)
    assert "σ=0.0" in (privacy_problem(forged, PRIVACY) or "")


# -- queries ---------------------------------------------------------------------------------

def test_queries_outside_the_spec_or_the_deadline_cap_are_invalid() -> None:
    ok = np.full(64, 0.5, np.float32)
    assert query_problem(query(ok), SPEC, 60_000) is None
    huge = query_problem(query(np.full(64, 3e38, np.float32)), SPEC, 60_000)
    assert huge is not None and "above the task's maximum 1" in huge
    assert "below" in (query_problem(query(np.full(64, -1, np.float32)), SPEC, 60_000) or "")
    assert "takes <f4 [64]" in (query_problem(query(ok[:8]), SPEC, 60_000) or "")
    far = query_problem(query(ok, deadline=NOW + 60_001), SPEC, 60_000)
    assert far is not None and far.startswith("deadline_too_far")
    # Unpublished spec: still no NaN.
    assert query_problem(query(np.full(64, np.nan, np.float32)), None, 60_000) is not None


def test_a_query_naming_an_unknown_strategy_is_invalid_never_substituted() -> None:
    """Before: the aggregator answered `strategy: best_vote` with soft_vote, silently."""
    ok = np.full(64, 0.5, np.float32)
    named = query(ok).model_copy(update={"strategy": "best_vote"})
    problem = query_problem(named, SPEC, 60_000)
    assert problem is not None and problem.startswith("unknown_strategy")
    assert "'best_vote'" in problem and "soft_vote" in problem
    assert query_problem(query(ok).model_copy(update={"strategy": "median"}), SPEC, 60_000) \
        is None
    assert strategy_problem(None) is None
    assert strategy_problem("x" * 500) is not None and len(strategy_problem("x" * 500) or "") < 300


def test_participants_decline_an_unknown_strategy_before_any_privacy_is_spent() -> None:
    p = prepare([(0, _raw(strategy="best_vote"))], MODEL, NOW, 60_000)
    assert len(p.answerable) == 0 and not p.broken
    assert p.status.tolist() == [BAD_INPUT] and p.details[0].startswith("unknown_strategy")
    assert decode_query_block(_raw(strategy="median")).strategy == "median"
    assert prepare([(0, _raw(strategy="median"))], MODEL, NOW, 60_000).answerable.tolist() \
        == [0]


def test_labels_must_be_classes_of_the_task() -> None:
    assert label_problem(9, 10) is None
    assert label_problem(10, 10) is not None
    assert label_problem(2**70, None) is not None


def test_a_label_of_two_to_the_seventy_does_not_decode() -> None:
    from schemas import DecodeError, Feedback
    raw = b'{"query_id": "q", "label": 1180591620717411303424, "created_at_ms": 0}'
    with pytest.raises(DecodeError):
        decode(raw, Feedback)


# -- participants agree with the aggregator --------------------------------------------------

def _raw(**fields: object) -> bytes:
    """A query block of one, its header fields replaced (None: left out) as given."""
    arrays = {"created_at_ms": np.array([NOW], "<i8"), "deadline_ms": np.array([NOW + 5000], "<i8"),
              "input": np.full((1, 64), 0.5, "<f4")}
    refs, end = layout(arrays)
    base: dict[str, object] = {"schema_version": 1, "block_id": "q1", "task": "digits", **refs}
    header = {k: v for k, v in {**base, **fields}.items() if v is not None}
    return bytes(pack(QueryBlockHeader.KIND, orjson.dumps(header), arrays, refs, end))


@pytest.mark.parametrize("fields", [
    {"quorum": 0}, {"block_id": "q1\n"}, {"task": "t" * 129}, {"schema_version": 2},
    {"strategy": 3}, {"client_id": 7}, {"query_ids": ["q1"]}, {"input_scale": 0.5},
    {"block_id": "b" * 123},
], ids=str)
def test_the_decode_accepts_only_what_the_aggregator_accepts(
        fields: dict[str, object]) -> None:
    """Before: `quorum: 0` (and the rest) passed the participant's fast path, so it
    answered, and spent privacy on, queries the aggregator dead-lettered. Both decode a
    block with the one decoder now (schemas.blocks); an id too long to derive row ids from
    is refused too."""
    raw = _raw(**fields)
    with pytest.raises(Exception):  # noqa: B017 - whatever the decoder says
        decode_query_block(raw)
    p = prepare([(0, raw)], MODEL, NOW, 60_000)
    assert len(p.answerable) == 0 and len(p.broken) == 1 and len(p) == 0


def _block(x: np.ndarray, *, deadline: int = NOW + 5000, block_id: str = "q1") -> bytes:
    return encode_query_block(query_block(block_id, "digits", x[None], created_at_ms=NOW,
                                          deadline_ms=deadline))


def test_a_query_of_3e38_is_declined_with_the_reason_before_any_privacy_is_spent() -> None:
    p = prepare([(0, _block(np.full(64, 3e38, np.float32)))], MODEL, NOW, 60_000)
    assert len(p.answerable) == 0 and p.status.tolist() == [BAD_INPUT]
    assert "above the task's maximum" in p.details[0]
    far = prepare([(0, _block(np.full(64, 0.5, np.float32), deadline=NOW + 90_000))],
                  MODEL, NOW, 60_000)
    assert len(far.answerable) == 0 and far.details[0].startswith("deadline_too_far")
    assert query_problem(query(np.full(64, 3e38, np.float32)), SPEC, 60_000) == p.details[0]


def test_non_finite_outputs_are_declined_never_signed() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    signer = Signer(participant_id="p1", spec=MODEL, privacy=PRIVACY,
                    key=Ed25519PrivateKey.generate())
    p = prepare([(0, _block(np.full(64, 0.5, np.float32), block_id=b)) for b in ("a", "b")],
                MODEL, NOW, 60_000)
    outputs = np.full((2, 10), 0.1, np.float32)
    outputs[1, 4] = np.nan
    [(_, raw)] = assemble(p, [0, 1], outputs, signer, NOW + 1)
    block = decode_response_block(raw)
    assert block.spans == [("a", 1), ("b", 1)]
    assert block.status.tolist() == [0, BAD_INPUT] and np.isfinite(block.outputs).all()
    assert input_problems(np.zeros((0, 64), np.float32), SPEC) == []
