"""Strategic participants, for the incentive experiments and tests only.

A strategic participant games the reward without contributing. Each behaviour here
replaces what the MODEL says, before the privacy mechanism, as a real participant would:
its answers then go through softmax, clip and noise like an honest one's, pass every row
check, and look plausible. `copycat` is not a model: it re-sends another participant's
noised answer (consumers/copycat.py); `fi_stream.copycat` is what catches it.

- honest: the trained model.
- random: a uniformly random class per query (one-hot).
- constant: always the same class (one-hot).
- uniform: 1/C for every class.
- lazy: a weak model, trained on 5 % of the participant's shard.
- colluding: k participants that share a secret answer the same random class per query:
  the class is a keyed hash of the query's input, so they agree without talking.
- copycat: re-sends another participant's answer under its own key.
"""

from __future__ import annotations

import hashlib
from typing import Literal, get_args

import numpy as np
import torch
from torch import nn

from fi_stream.errors import ConfigError
from fi_stream.models import ModelSpec, train_participant

Behaviour = Literal["honest", "random", "constant", "uniform", "lazy", "copycat", "colluding"]
BEHAVIOURS: tuple[Behaviour, ...] = get_args(Behaviour)
#: Behaviours that earn nothing honest: the incentive scheme must pay them least.
STRATEGIC: frozenset[str] = frozenset({"random", "constant", "uniform", "copycat", "colluding"})

#: Share of its shard the lazy participant trains on.
LAZY_FRACTION = 0.05
#: A logit this far above the others is a one-hot after softmax (e^-50 ≈ 2e-22).
ONE_HOT_LOGIT = 50.0


class _Strategic(nn.Module):
    """Logits for `classes` per input row; the real model is kept but never called."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def classes(self, x: torch.Tensor) -> torch.Tensor | None:
        """The class each row claims (long, (N,)); None for no class (uniform)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], self.num_classes, device=x.device)
        chosen = self.classes(x)
        if chosen is not None:
            logits[torch.arange(x.shape[0], device=x.device), chosen.to(x.device)] = ONE_HOT_LOGIT
        return logits


class RandomClass(_Strategic):
    def __init__(self, num_classes: int, rng: np.random.Generator) -> None:
        super().__init__(num_classes)
        self._rng = rng

    def classes(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self._rng.integers(0, self.num_classes, x.shape[0]))


class ConstantClass(_Strategic):
    def __init__(self, num_classes: int, cls: int = 0) -> None:
        super().__init__(num_classes)
        self.cls = cls

    def classes(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0],), self.cls, dtype=torch.long)


class Uniform(_Strategic):
    def classes(self, x: torch.Tensor) -> None:
        return None


class Colluding(_Strategic):
    """Class = keyed BLAKE2b of the input bytes: every holder of `secret` agrees per query."""

    def __init__(self, num_classes: int, secret: bytes) -> None:
        super().__init__(num_classes)
        if not secret:
            raise ConfigError("colluding participants need a shared secret; pass "
                              "--collusion-secret (the same for every colluder)")
        self._key = hashlib.blake2b(secret, digest_size=32).digest()

    def classes(self, x: torch.Tensor) -> torch.Tensor:
        rows = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        picks = [int.from_bytes(hashlib.blake2b(r.tobytes(), key=self._key,
                                                digest_size=8).digest(), "little")
                 % self.num_classes for r in rows.reshape(len(rows), -1)]
        return torch.tensor(picks, dtype=torch.long)


def strategic_model(module: nn.Module, spec: ModelSpec, behaviour: Behaviour, *,
                    rng: np.random.Generator | None = None,
                    collusion_secret: bytes = b"") -> nn.Module:
    """The module a participant of `behaviour` runs instead of (or in place of) `module`.

    `rng` drives `random` (fresh entropy when None); `lazy` retrains from the shard the
    spec records. `copycat` has no model of its own (consumers/copycat.py): refused here.
    """
    c = spec.num_classes
    if behaviour == "honest":
        return module
    if behaviour == "random":
        return RandomClass(c, rng if rng is not None else np.random.default_rng())
    if behaviour == "constant":
        return ConstantClass(c)
    if behaviour == "uniform":
        return Uniform(c)
    if behaviour == "colluding":
        return Colluding(c, collusion_secret)
    if behaviour == "lazy":
        return lazy_model(spec)
    raise ConfigError(f"behaviour {behaviour!r} has no model; use one of "
                      f"{', '.join(b for b in BEHAVIOURS if b != 'copycat')} here")


def lazy_model(spec: ModelSpec) -> nn.Module:
    """The same architecture trained on 5 % of the shard the spec records."""
    t = spec.trained_on
    if t is None:
        raise ConfigError("a lazy participant retrains on part of its shard, but the model's "
                          "spec.json records no `trained_on`; train it with `participant train`")
    module, _ = train_participant(shard=t["shard"], of=t["of"], alpha=t["alpha"], seed=t["seed"],
                                  participant_id=spec.participant_id, fraction=LAZY_FRACTION)
    return module
