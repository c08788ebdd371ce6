"""A teacher ensemble: K models of one architecture run as ONE batched computation.

PATE's subsample-and-aggregate inside one participant (DESIGN §5, mechanism ``teachers``):
K teachers trained on disjoint parts of the participant's shard vote, and the participant
releases the normalized vote histogram. The K weight sets are stacked along a leading
dimension and the architecture is called once through `torch.func.functional_call` under
`torch.vmap`, so K teachers cost K× the FLOPs of one model but not K Python calls (for the
MLP, vmap turns each Linear into one batched matmul). Training uses the same stacked
weights: the loss is the sum of the K teachers' losses, whose gradient for teacher k only
involves teacher k, and Adam and weight decay act element-wise, so one optimizer step on
the stack is exactly K independent steps.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from fi_stream.errors import ConfigError


class TeacherEnsemble(nn.Module):
    """K copies of `template`'s architecture with stacked weights; `forward` returns the
    normalized vote histogram (N, classes), float32, rows summing to 1."""

    def __init__(self, template: nn.Module, stacked: dict[str, torch.Tensor],
                 num_classes: int) -> None:
        super().__init__()
        teachers = {int(t.shape[0]) for t in stacked.values()}
        if len(teachers) != 1:
            raise ConfigError(f"stacked teacher tensors disagree on K: {sorted(teachers)}")
        self.teachers = teachers.pop()
        self.num_classes = num_classes
        # The template only lends its forward to functional_call; its own tensors are unused.
        self._template = [template]  # in a list: not a submodule, so .to() skips it
        self._names = sorted(stacked)
        for i, name in enumerate(self._names):
            self.register_buffer(f"t{i}", stacked[name])

    @classmethod
    def from_modules(cls, modules: list[nn.Module], num_classes: int) -> TeacherEnsemble:
        params, buffers = stack_module_state(modules)
        stacked = {k: v.detach() for k, v in (params | buffers).items()}
        return cls(modules[0], stacked, num_classes)

    def stacked_state(self) -> dict[str, torch.Tensor]:
        """Name → (K, *shape) tensor: what `save_model` writes to safetensors."""
        return {name: getattr(self, f"t{i}") for i, name in enumerate(self._names)}

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, *input) → (K, N, classes): every teacher on every input, one vmapped call."""
        template = self._template[0]
        state = self.stacked_state()

        def one(weights: dict[str, torch.Tensor]) -> torch.Tensor:
            out: torch.Tensor = functional_call(template, weights, (x,))
            return out

        logits: torch.Tensor = torch.vmap(one)(state)
        return logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        votes = self.logits(x).argmax(dim=-1)  # (K, N)
        counts = torch.zeros(x.shape[0], self.num_classes, device=x.device, dtype=torch.float32)
        counts.scatter_add_(1, votes.T, torch.ones_like(votes.T, dtype=torch.float32))
        return counts / self.teachers


def split_into_parts(n: int, teachers: int, rng: np.random.Generator
                     ) -> list[npt.NDArray[np.int64]]:
    """K disjoint parts of range(n), as equal as possible: each record in ONE teacher's
    data, which is what bounds the sensitivity to one vote."""
    if not 1 <= teachers <= n:
        raise ConfigError(f"{teachers} teachers need at least as many records; the shard has {n}")
    return [np.sort(p).astype(np.int64) for p in np.array_split(rng.permutation(n), teachers)]


def fit_teachers(modules: list[nn.Module], x: torch.Tensor, y: torch.Tensor,
                 parts: list[npt.NDArray[np.int64]], *, num_classes: int, steps: int,
                 batch_size: int, lr: float, weight_decay: float, gen: torch.Generator
                 ) -> TeacherEnsemble:
    """Train K teachers at once on their own parts (stacked weights, one Adam).

    Each step gives every teacher a minibatch of min(batch_size, smallest part) records
    drawn without replacement from its own part, so no record is ever seen by two teachers.
    """
    params, buffers = stack_module_state(modules)
    template = modules[0]
    smallest = min(len(p) for p in parts)
    b = min(batch_size, smallest)
    opt = torch.optim.Adam(list(params.values()), lr=lr, weight_decay=weight_decay)
    part_t = [torch.from_numpy(p) for p in parts]

    def loss_of(p: dict[str, torch.Tensor], bu: dict[str, torch.Tensor], xb: torch.Tensor,
                yb: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = functional_call(template, (p, bu), (xb,))
        return nn.functional.cross_entropy(out, yb)

    batched = torch.vmap(loss_of)
    for _ in range(steps):
        idx = torch.stack([pt[torch.randperm(len(pt), generator=gen)[:b]] for pt in part_t])
        opt.zero_grad()
        batched(params, buffers, x[idx], y[idx]).sum().backward()  # type: ignore[no-untyped-call]
        opt.step()
    stacked = {name: t.detach() for name, t in (params | buffers).items()}
    return TeacherEnsemble(template, stacked, num_classes)
