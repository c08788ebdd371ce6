"""Training a participant's digits model on its own non-IID shard (CPU, seconds)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from fi_stream.models.architectures import build
from fi_stream.models.data import dirichlet_shards, load_digits_split
from fi_stream.models.spec import ModelSpec


def evaluate(module: nn.Module, x: npt.NDArray[np.float32], y: npt.NDArray[np.int64]) -> float:
    with torch.inference_mode():
        pred = module(torch.from_numpy(x)).argmax(dim=1).numpy()
    return float((pred == y).mean())


def train_participant(*, shard: int, of: int, alpha: float, seed: int = 0, epochs: int = 60,
                      participant_id: str | None = None, version: str = "1"
                      ) -> tuple[nn.Module, ModelSpec]:
    """Every participant draws the same partition from `seed` and keeps only its shard."""
    split = load_digits_split()
    shards = dirichlet_shards(split.y_train, of, alpha, np.random.default_rng(seed))
    idx = shards[shard]
    x, y = split.x_train[idx], split.y_train[idx]
    spec = ModelSpec(architecture="digits-mlp", task="digits", version=version,
                     input_shape=(64,), num_classes=10, participant_id=participant_id)
    torch.manual_seed(seed * 1000 + shard)  # weight init of this participant only
    module = build(spec)
    gen = torch.Generator().manual_seed(seed * 1000 + shard)
    opt = torch.optim.Adam(module.parameters(), lr=3e-3, weight_decay=1e-4)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    module.train()
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=gen)
        for start in range(0, len(xt), 64):
            b = order[start:start + 64]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(module(xt[b]), yt[b])
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
    module.eval()
    counts = np.bincount(y, minlength=10).tolist()
    spec = spec.model_copy(update={
        "trained_on": {"shard": shard, "of": of, "alpha": alpha, "seed": seed,
                       "n_train": len(idx), "label_counts": counts},
        "metrics": {"train_accuracy": evaluate(module, x, y),
                    "test_accuracy": evaluate(module, split.x_test, split.y_test)},
    })
    return module, spec
