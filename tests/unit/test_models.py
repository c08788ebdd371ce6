"""Participants' models: storage and its error paths, shards, training, the ensemble promise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import fi_stream.models
from fi_stream.errors import (
    ConfigError,
    CorruptModelError,
    ModelNotFoundError,
    ShapeMismatchError,
    UnknownArchitectureError,
)
from fi_stream.models import (
    SPEC_FILE,
    WEIGHTS_FILE,
    DigitsSplit,
    ModelSpec,
    build,
    dirichlet_shards,
    evaluate,
    known_architectures,
    load_digits_split,
    load_model,
    load_spec,
    save_model,
    train_participant,
)

SPEC = ModelSpec(architecture="digits-mlp", task="digits", version="1", input_shape=(64,),
                 num_classes=10)
RESNET = ModelSpec(architecture="resnet18-c", task="cifar", version="1",
                   input_shape=(3, 32, 32), num_classes=10)
N, ALPHA = 5, 0.3


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def split() -> DigitsSplit:
    return load_digits_split()


@pytest.fixture(scope="module")
def federation() -> list[tuple[nn.Module, ModelSpec]]:
    """The demo's default federation: 5 participants, α=0.3, seed 0 (about a second)."""
    return [train_participant(shard=k, of=N, alpha=ALPHA, seed=0, participant_id=f"p{k}")
            for k in range(N)]


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    save_model(tmp_path, build(SPEC, generator=_gen()), SPEC)
    return tmp_path


# ---- storage ------------------------------------------------------------------------------

def test_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    spec = SPEC.model_copy(update={"participant_id": "p0", "metrics": {"test_accuracy": 0.5}})
    module = build(spec, generator=_gen()).eval()
    save_model(tmp_path, module, spec)
    loaded, loaded_spec = load_model(tmp_path)
    x = torch.rand(7, 64, generator=_gen(1))
    assert loaded_spec == spec == load_spec(tmp_path)
    assert not loaded.training
    assert torch.equal(module(x), loaded(x))
    # Only safetensors and JSON, and no temp files left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == [WEIGHTS_FILE, SPEC_FILE]
    assert json.loads((tmp_path / SPEC_FILE).read_text())["participant_id"] == "p0"


def test_round_trip_keeps_batchnorm_buffers(tmp_path: Path) -> None:
    module = build(RESNET, generator=_gen())
    module.train()
    with torch.no_grad():
        module(torch.rand(4, 3, 32, 32, generator=_gen(1)))  # moves the running stats
    module.eval()
    save_model(tmp_path, module, RESNET)
    loaded, _ = load_model(tmp_path)
    x = torch.rand(2, 3, 32, 32, generator=_gen(2))
    with torch.inference_mode():
        assert torch.equal(module(x), loaded(x))


def test_save_overwrites_an_existing_model(saved: Path) -> None:
    other = build(SPEC, generator=_gen(9)).eval()
    save_model(saved, other, SPEC.model_copy(update={"version": "2"}))
    loaded, spec = load_model(saved)
    x = torch.rand(3, 64, generator=_gen(1))
    assert spec.version == "2"
    assert torch.equal(loaded(x), other(x))


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"does not exist.*fi-stream participant train"):
        load_model(tmp_path / "nowhere")


def test_missing_spec(saved: Path) -> None:
    (saved / SPEC_FILE).unlink()
    with pytest.raises(ModelNotFoundError, match=r"no spec\.json.*fi-stream participant train"):
        load_model(saved)


def test_missing_weights(saved: Path) -> None:
    (saved / WEIGHTS_FILE).unlink()
    with pytest.raises(ModelNotFoundError,
                       match=r"no model\.safetensors.*fi-stream participant train"):
        load_model(saved)


@pytest.mark.parametrize("text", ["{not json", "[]", '{"architecture": "digits-mlp"}',
                                  SPEC.model_dump_json()[:-1] + ', "pickle": true}'])
def test_corrupt_spec(saved: Path, text: str) -> None:
    (saved / SPEC_FILE).write_text(text)
    with pytest.raises(CorruptModelError, match=r"spec\.json"):
        load_model(saved)


@pytest.mark.parametrize("cut", [b"\x00garbage", None])
def test_corrupt_weights(saved: Path, cut: bytes | None) -> None:
    path = saved / WEIGHTS_FILE
    data = path.read_bytes()
    path.write_bytes(cut if cut is not None else data[: len(data) // 2])  # garbage / truncated
    with pytest.raises(CorruptModelError, match="safetensors"):
        load_model(saved)


def test_unknown_architecture(saved: Path) -> None:
    (saved / SPEC_FILE).write_text(
        SPEC.model_copy(update={"architecture": "gpt-17"}).model_dump_json())
    with pytest.raises(UnknownArchitectureError, match=r"gpt-17.*digits-mlp, resnet18-c"):
        load_model(saved)
    assert known_architectures() == ["digits-mlp", "resnet18-c"]


def test_wrong_tensor_shape_names_key_and_both_shapes(tmp_path: Path) -> None:
    save_model(tmp_path, build(SPEC.model_copy(update={"num_classes": 7})), SPEC)
    with pytest.raises(ShapeMismatchError,
                       match=r"'4\.bias' has shape \(7,\) .* needs \(10,\)"):
        load_model(tmp_path)


def test_missing_and_unexpected_keys(tmp_path: Path) -> None:
    extra = nn.Sequential(*build(SPEC).children(), nn.Linear(10, 10))
    save_model(tmp_path, extra, SPEC)
    with pytest.raises(ShapeMismatchError, match=r"does not, e\.g\. '5\.bias'"):
        load_model(tmp_path)
    save_model(tmp_path, build(RESNET), SPEC)
    with pytest.raises(ShapeMismatchError, match=r"lacks 6 tensors .* e\.g\. '0\.bias'"):
        load_model(tmp_path)


def test_no_pickle_anywhere() -> None:
    package = Path(fi_stream.models.__file__).parent
    source = "".join(p.read_text() for p in package.glob("*.py"))
    assert "torch.load" not in source and "import pickle" not in source


# ---- architectures ------------------------------------------------------------------------

def test_resnet18_forward_shape() -> None:
    with torch.inference_mode():
        assert build(RESNET).eval()(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_build_is_seeded_and_leaves_global_rng_alone() -> None:
    before = torch.get_rng_state()
    a, b, c = build(SPEC, generator=_gen(3)), build(SPEC, generator=_gen(3)), build(SPEC)
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(next(a.parameters()), next(c.parameters()))


def test_spec_shape_must_fit_architecture() -> None:
    with pytest.raises(ShapeMismatchError, match="flat inputs"):
        build(SPEC.model_copy(update={"input_shape": (8, 8)}))


# ---- data and shards ----------------------------------------------------------------------

def test_digits_split_is_fixed_and_stratified(split: DigitsSplit) -> None:
    assert split.x_test.shape == (360, 64) and split.x_train.shape == (1437, 64)
    assert split.x_train.dtype == np.float32 and split.y_train.dtype == np.int64
    assert split.x_train.min() >= 0.0 and split.x_train.max() <= 1.0
    assert np.bincount(split.y_test).min() >= 35  # every class held out
    assert np.array_equal(load_digits_split().y_test, split.y_test)


def test_dirichlet_shards_partition_deterministically(split: DigitsSplit) -> None:
    y = split.y_train
    shards = dirichlet_shards(y, N, ALPHA, np.random.default_rng(0))
    joined = np.concatenate(shards)
    assert len(joined) == len(y) and np.array_equal(np.sort(joined), np.arange(len(y)))
    assert min(len(s) for s in shards) >= 10
    again = dirichlet_shards(y, N, ALPHA, np.random.default_rng(0))
    assert all(np.array_equal(a, b) for a, b in zip(shards, again, strict=True))
    other = dirichlet_shards(y, N, ALPHA, np.random.default_rng(1))
    assert not all(np.array_equal(a, b) for a, b in zip(shards, other, strict=False))


def _mean_tv_from_uniform(y: np.ndarray, shards: list[np.ndarray]) -> float:
    """Total-variation distance of each shard's label mix from uniform, averaged."""
    return float(np.mean([0.5 * np.abs(np.bincount(y[s], minlength=10) / len(s) - 0.1).sum()
                          for s in shards]))


def test_small_alpha_is_non_iid_large_alpha_is_not(split: DigitsSplit) -> None:
    y = split.y_train
    skewed = [_mean_tv_from_uniform(y, dirichlet_shards(y, N, ALPHA, np.random.default_rng(s)))
              for s in range(5)]
    near_iid = _mean_tv_from_uniform(y, dirichlet_shards(y, N, 1000.0, np.random.default_rng(0)))
    assert min(skewed) > 0.4
    assert near_iid < 0.1


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 8), alpha=st.floats(0.05, 50.0), seed=st.integers(0, 2**32 - 1),
       classes=st.integers(1, 10))
def test_dirichlet_shards_always_partition(n: int, alpha: float, seed: int,
                                           classes: int) -> None:
    labels = np.random.default_rng(seed).integers(0, classes, size=400).astype(np.int64)
    try:
        shards = dirichlet_shards(labels, n, alpha, np.random.default_rng(seed), max_tries=200)
    except ConfigError:
        return  # tiny α with many shards may never give every shard 10 samples: said so
    assert np.array_equal(np.sort(np.concatenate(shards)), np.arange(len(labels)))
    assert len(shards) == n and min(len(s) for s in shards) >= 10


@pytest.mark.parametrize(("n", "alpha"), [(0, 1.0), (3, 0.0), (3, -1.0), (200, 1.0)])
def test_dirichlet_shards_reject_bad_parameters(n: int, alpha: float) -> None:
    with pytest.raises(ConfigError):
        dirichlet_shards(np.zeros(100, np.int64), n, alpha, np.random.default_rng(0))


# ---- training and the ensemble ------------------------------------------------------------

def test_participant_knows_its_own_classes(
        federation: list[tuple[nn.Module, ModelSpec]], split: DigitsSplit) -> None:
    for module, spec in federation:
        assert spec.trained_on is not None
        counts = np.asarray(spec.trained_on["label_counts"])
        assert counts.sum() == spec.trained_on["n_train"]
        own = np.isin(split.y_test, np.flatnonzero(counts >= 20))  # its well-covered classes
        assert spec.metrics["train_accuracy"] > 0.95
        assert evaluate(module, split.x_test[own], split.y_test[own]) > 0.9, spec.participant_id


def test_training_is_reproducible_and_spec_is_complete(
        federation: list[tuple[nn.Module, ModelSpec]]) -> None:
    module, spec = train_participant(shard=2, of=N, alpha=ALPHA, seed=0, participant_id="p2")
    assert spec == federation[2][1]
    assert all(torch.equal(p, q) for p, q in
               zip(module.parameters(), federation[2][0].parameters(), strict=True))
    assert spec.trained_on is not None
    assert spec.trained_on == {**spec.trained_on, "shard": 2, "of": N, "alpha": ALPHA, "seed": 0}
    assert set(spec.metrics) == {"train_accuracy", "test_accuracy"}


def test_train_rejects_a_shard_out_of_range() -> None:
    with pytest.raises(ConfigError, match="shard"):
        train_participant(shard=5, of=5, alpha=ALPHA)


def test_ensemble_beats_the_best_participant(
        federation: list[tuple[nn.Module, ModelSpec]], split: DigitsSplit) -> None:
    """The demo's promise: together the participants beat any one of them."""
    x = torch.from_numpy(split.x_test)
    with torch.inference_mode():
        probs = np.stack([torch.softmax(m(x), dim=1).numpy() for m, _ in federation])
    ensemble = float((probs.mean(axis=0).argmax(axis=1) == split.y_test).mean())
    solo = {spec.participant_id: spec.metrics["test_accuracy"] for _, spec in federation}
    print(f"α={ALPHA}, {N} participants, seed 0: solo {solo}, soft-vote ensemble {ensemble:.3f}")
    # Measured 0.883 against a best single 0.764 (+0.12); over seeds 0-7 the margin is
    # +0.03 to +0.19. The bar leaves room for numeric drift across torch versions.
    assert ensemble > max(solo.values()) + 0.05
    assert ensemble > 0.85
