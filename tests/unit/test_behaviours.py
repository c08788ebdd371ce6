"""Strategic participants' models: what each behaviour answers, before the privacy mechanism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fi_stream.behaviours import strategic_model
from fi_stream.errors import ConfigError
from fi_stream.models import evaluate, load_digits_split, train_participant


@pytest.fixture(scope="module")
def trained() -> tuple[torch.nn.Module, object]:
    return train_participant(shard=0, of=5, alpha=1.0, seed=0, participant_id="p1")


def _probs(module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return torch.softmax(module(torch.from_numpy(x)), dim=-1).numpy()


def test_each_behaviour_answers_what_it_claims(trained: tuple) -> None:
    module, spec = trained
    x = load_digits_split().x_test
    honest = strategic_model(module, spec, "honest")
    assert honest is module
    rand = _probs(strategic_model(module, spec, "random", rng=np.random.default_rng(0)), x)
    assert np.allclose(rand.max(axis=1), 1.0)
    counts = np.bincount(rand.argmax(axis=1), minlength=10)
    assert counts.min() > 15  # 360 draws over 10 classes
    const = _probs(strategic_model(module, spec, "constant"), x)
    assert (const.argmax(axis=1) == 0).all() and np.allclose(const.max(axis=1), 1.0)
    uniform = _probs(strategic_model(module, spec, "uniform"), x)
    assert np.allclose(uniform, 0.1)


def test_colluders_with_one_secret_agree_and_others_do_not(trained: tuple) -> None:
    module, spec = trained
    x = load_digits_split().x_test
    a = _probs(strategic_model(module, spec, "colluding", collusion_secret=b"s"), x)
    b = _probs(strategic_model(module, spec, "colluding", collusion_secret=b"s"), x)
    c = _probs(strategic_model(module, spec, "colluding", collusion_secret=b"t"), x)
    assert (a.argmax(axis=1) == b.argmax(axis=1)).all()
    assert (a.argmax(axis=1) == c.argmax(axis=1)).mean() < 0.3
    with pytest.raises(ConfigError, match="secret"):
        strategic_model(module, spec, "colluding")


def test_lazy_is_a_weaker_model_of_the_same_shard(trained: tuple) -> None:
    module, spec = trained
    split = load_digits_split()
    lazy = strategic_model(module, spec, "lazy")
    assert evaluate(lazy, split.x_test, split.y_test) < spec.metrics["test_accuracy"] - 0.1
    with pytest.raises(ConfigError, match="copycat"):
        strategic_model(module, spec, "copycat")


def test_the_cli_knows_every_behaviour_without_importing_torch() -> None:
    from fi_stream import behaviours, choices

    assert choices.BEHAVIOURS == behaviours.BEHAVIOURS
