"""Digits shards, training, safe storage and its error paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fi_stream.errors import (
    CorruptModelError,
    ModelNotFoundError,
    ShapeMismatchError,
    UnknownArchitectureError,
)
from fi_stream.models import (
    ModelSpec,
    build,
    dirichlet_shards,
    load_digits_split,
    load_model,
    save_model,
    train_participant,
)

SPEC = ModelSpec(architecture="digits-mlp", task="digits", version="1", input_shape=(64,),
                 num_classes=10)


def test_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    module = build(SPEC).eval()
    save_model(tmp_path, module, SPEC)
    loaded, spec = load_model(tmp_path)
    x = torch.rand(5, 64)
    assert spec == SPEC
    assert torch.equal(module(x), loaded(x))
    assert not any(p.suffix in {".pt", ".pkl", ".bin"} for p in tmp_path.iterdir())


def test_error_paths(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="participant train"):
        load_model(tmp_path / "missing")
    save_model(tmp_path, build(SPEC), SPEC)
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CorruptModelError):
        load_model(tmp_path)
    (tmp_path / "spec.json").write_text("{not json")
    with pytest.raises(CorruptModelError):
        load_model(tmp_path)
    (tmp_path / "spec.json").write_text(SPEC.model_copy(update={"architecture": "x"})
                                        .model_dump_json())
    with pytest.raises(UnknownArchitectureError, match="digits-mlp"):
        load_model(tmp_path)
    save_model(tmp_path, build(SPEC.model_copy(update={"num_classes": 7})), SPEC)
    with pytest.raises(ShapeMismatchError, match="needs"):
        load_model(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(ModelNotFoundError):
        load_model(tmp_path)


def test_dirichlet_shards_partition_and_are_non_iid() -> None:
    y = load_digits_split().y_train
    shards = dirichlet_shards(y, 5, 0.3, np.random.default_rng(0))
    joined = np.concatenate(shards)
    assert len(joined) == len(y) == len(set(joined.tolist()))
    again = dirichlet_shards(y, 5, 0.3, np.random.default_rng(0))
    assert all(np.array_equal(a, b) for a, b in zip(shards, again, strict=True))
    # Total-variation distance of each shard's label mix from uniform: far from 0.
    tv = [0.5 * np.abs(np.bincount(y[s], minlength=10) / len(s) - 0.1).sum() for s in shards]
    assert np.mean(tv) > 0.3


def test_ensemble_beats_the_best_participant_at_alpha_0_3() -> None:
    split = load_digits_split()
    probs, solo = [], []
    for k in range(5):
        module, spec = train_participant(shard=k, of=5, alpha=0.3, seed=0)
        with torch.inference_mode():
            probs.append(torch.softmax(module(torch.from_numpy(split.x_test)), 1).numpy())
        solo.append(spec.metrics["test_accuracy"])
    ensemble = float((np.mean(probs, axis=0).argmax(1) == split.y_test).mean())
    assert ensemble > max(solo) + 0.05


def test_resnet18_shapes() -> None:
    spec = ModelSpec(architecture="resnet18-c", task="cifar", version="1",
                     input_shape=(3, 32, 32), num_classes=10)
    assert build(spec).eval()(torch.rand(2, 3, 32, 32)).shape == (2, 10)
