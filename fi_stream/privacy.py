"""The release mechanisms of DESIGN §5, their sensitivity, and THE ε of a participant's spend.

What is protected: one training record of one participant, under replace-one adjacency
(two datasets of that participant differ in one record; everyone else's are the same). A
participant's model is NOT trained privately, so one record may move anything the model
computes anywhere; only the release mechanism bounds what an observer learns.

Two mechanisms, both "bound the released vector, then add Gaussian noise":

- ``gaussian``: softmax probabilities clipped to L2 ≤ C, plus N(0, (σ·C)²) per coordinate.
- ``teachers``: K models trained on disjoint parts of the participant's data vote; the
  answer is the normalized vote histogram (L1 = 1, so L2 ≤ C = 1) plus N(0, σ²).

σ is always the noise std relative to the bound C of the released vector, as the registry
entry publishes it (``privacy.clip_norm``, ``privacy.noise_multiplier``). The accountant's
multiplier is noise std / L2 sensitivity; `sensitivity` is the one place that derives it.

Every answer is one Gaussian event with that multiplier, composed under RDP with
dp-accounting's accountant. `epsilon` is the ONE function that turns answers per mechanism
into ε: the ledger, the ε gauge, `participant budget`, `privacy epsilon`, the experiment and
the audit all call it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import dp_accounting
import torch
from dp_accounting.rdp import RdpAccountant

from fi_stream.errors import PrivacyError
from schemas import Privacy

#: Upper bound for budget searches; no participant answers more in one accounting period.
MAX_ANSWERS = 10**9

MechanismName = Literal["gaussian", "teachers"]
MECHANISMS: tuple[MechanismName, ...] = ("gaussian", "teachers")

_TINY = torch.finfo(torch.float32).tiny


def _check_clip_norm(clip_norm: float) -> None:
    if not (clip_norm > 0 and math.isfinite(clip_norm)):
        raise PrivacyError(
            f"clip_norm must be a finite number > 0, got {clip_norm}; "
            "set privacy.clip_norm (1.0 bounds a probability vector)")


def _check_noise_multiplier(noise_multiplier: float) -> None:
    if not (noise_multiplier >= 0 and math.isfinite(noise_multiplier)):
        raise PrivacyError(
            f"noise_multiplier must be a finite number >= 0, got {noise_multiplier}; "
            "set privacy.noise_multiplier (0 disables noise and privacy)")


def _check_delta(delta: float) -> None:
    if not 0 < delta < 1:
        raise PrivacyError(
            f"delta must be in (0, 1), got {delta}; pick one well below 1/(number of records)")


def sensitivity(name: MechanismName, clip_norm: float, teachers: int | None = None) -> float:
    """L2 sensitivity of ONE answer to replacing one training record of the participant.

    - ``gaussian``: the model is not private, so a record may move its clipped output
      anywhere in the ball of radius C. The outputs are probabilities (non-negative), and
      two non-negative vectors a, b with |a|, |b| ≤ C satisfy |a − b|² = |a|² + |b|² −
      2·a·b ≤ 2·C²: the sensitivity is √2·C (it would be 2·C for signed outputs such as
      logits, which fi-stream never releases).
    - ``teachers``: the K teachers are trained on disjoint parts, so a record is in the
      data of ONE teacher and changes at most its vote: one bin of the normalized histogram
      loses 1/K and another gains 1/K, a move of √2/K in L2. The histogram's own bound is
      C = 1 (L2 ≤ L1 = 1), which is the only clip_norm this mechanism accepts.
    """
    _check_clip_norm(clip_norm)
    if name == "gaussian":
        if teachers is not None:
            raise PrivacyError("the gaussian mechanism has no teachers; drop --teachers")
        return math.sqrt(2.0) * clip_norm
    if name == "teachers":
        if teachers is None or teachers < 1:
            raise PrivacyError(f"the teachers mechanism needs teachers K >= 1, got {teachers}")
        if clip_norm != 1.0:
            raise PrivacyError(
                f"the teachers mechanism releases a vote histogram (bound C = 1); "
                f"got clip_norm={clip_norm}: set privacy.clip_norm = 1.0")
        return math.sqrt(2.0) / teachers
    raise PrivacyError(f"unknown mechanism {name!r}; use one of {', '.join(MECHANISMS)}")


@dataclass(frozen=True, kw_only=True)
class Mechanism:
    """What a participant releases per answer: a vector bounded to L2 ≤ clip_norm (C),
    plus N(0, (noise_multiplier·C)²) per coordinate. Hashable: it keys the ledger's spend."""

    name: MechanismName = "gaussian"
    clip_norm: float = 1.0
    noise_multiplier: float
    teachers: int | None = None

    def __post_init__(self) -> None:
        _check_noise_multiplier(self.noise_multiplier)
        sensitivity(self.name, self.clip_norm, self.teachers)  # validates the rest

    @property
    def noise_std(self) -> float:
        return self.noise_multiplier * self.clip_norm

    @property
    def sensitivity(self) -> float:
        return sensitivity(self.name, self.clip_norm, self.teachers)

    @property
    def accountant_multiplier(self) -> float:
        """Noise std over L2 sensitivity: the σ of dp-accounting's GaussianDpEvent."""
        return self.noise_std / self.sensitivity

    @classmethod
    def from_privacy(cls, p: Privacy) -> Mechanism:
        """The mechanism a registry entry or a ResponseBatch states."""
        return cls(name=p.mechanism, clip_norm=p.clip_norm, noise_multiplier=p.noise_multiplier,
                   teachers=p.teachers)

    def to_privacy(self) -> Privacy:
        return Privacy(mechanism=self.name, clip_norm=self.clip_norm,
                       noise_multiplier=self.noise_multiplier, teachers=self.teachers)

    def describe(self) -> str:
        k = f", K = {self.teachers}" if self.teachers is not None else ""
        return f"{self.name} (σ = {self.noise_multiplier:g}, C = {self.clip_norm:g}{k})"


@dataclass(frozen=True)
class PrivacyBudget:
    """(ε_max, δ) a participant may spend in one accounting period; ε_max may be inf."""

    epsilon_max: float
    delta: float

    def __post_init__(self) -> None:
        if not self.epsilon_max > 0:  # also rejects NaN
            raise PrivacyError(
                f"epsilon_max must be > 0, got {self.epsilon_max}; "
                "set privacy.epsilon_max to the ε a participant may spend")
        _check_delta(self.delta)


Spend = Mapping[Mechanism, int]


def epsilon(spend: Spend, delta: float) -> float:
    """ε at δ of all the answers in `spend` (answers per mechanism), composed under RDP.

    THE ε of fi-stream. Answers with the same accountant multiplier compose as one
    self-composed Gaussian event (closed form: accounting 10,000 answers costs as much as
    one), so a result is cached on the multiset of (multiplier, answers).
    """
    _check_delta(delta)
    events: Counter[float] = Counter()
    for mechanism, answers in spend.items():
        if answers < 0:
            raise PrivacyError(f"answers must be >= 0, got {answers} for {mechanism.describe()}")
        if answers:
            events[mechanism.accountant_multiplier] += answers
    return _rdp_epsilon(tuple(sorted(events.items())), delta)


@lru_cache(maxsize=8192)
def _rdp_epsilon(events: tuple[tuple[float, int], ...], delta: float) -> float:
    if not events:
        return 0.0
    if any(multiplier == 0 for multiplier, _ in events):
        return math.inf  # an answer without noise: no privacy at all
    accountant = RdpAccountant()
    for multiplier, answers in events:
        accountant.compose(dp_accounting.SelfComposedDpEvent(
            dp_accounting.GaussianDpEvent(multiplier), int(answers)))
    return float(accountant.get_epsilon(delta))


def epsilon_spent(answers: int, mechanism: Mechanism, delta: float) -> float:
    """ε at δ of `answers` answers of one mechanism (`epsilon` of a one-entry spend)."""
    if answers < 0:
        raise PrivacyError(f"answers must be >= 0, got {answers}")
    return epsilon({mechanism: answers}, delta)


def epsilon_series(cumulative: Sequence[tuple[int, Spend]], delta: float, samples: int
                   ) -> list[tuple[int, float]]:
    """ε at δ after about `samples` evenly spaced points of a spend that grows over time
    (each point (time, spend so far)); the last point is always included. Each point is an
    RDP conversion, so a plot samples instead of pricing every step."""
    if samples <= 0 or not cumulative:
        return []
    step = max(1, math.ceil(len(cumulative) / samples))
    picked = list(cumulative[step - 1::step])
    if not picked or picked[-1] is not cumulative[-1]:
        picked.append(cumulative[-1])
    return [(t, epsilon(spend, delta)) for t, spend in picked]


def max_answers(budget: PrivacyBudget, mechanism: Mechanism, prior: Spend | None = None) -> int:
    """The largest n ≤ MAX_ANSWERS with epsilon(prior + n answers of `mechanism`) ≤ ε_max.

    `prior`: what was already spent under OTHER mechanisms (its entry for `mechanism`
    itself, if any, is ignored: n counts all of that mechanism's answers). ε is
    non-decreasing in n (RDP adds up, the conversion to ε is monotone), so n is found by
    an exponential, then a binary search.
    """
    others = tuple(sorted(((m, n) for m, n in (prior or {}).items() if m != mechanism and n),
                          key=lambda mn: (mn[0].accountant_multiplier, mn[1])))
    return _max_answers(budget, mechanism, others)


@lru_cache(maxsize=256)
def _max_answers(budget: PrivacyBudget, mechanism: Mechanism,
                 others: tuple[tuple[Mechanism, int], ...]) -> int:
    def fits(n: int) -> bool:
        return epsilon(dict(others) | {mechanism: n}, budget.delta) <= budget.epsilon_max

    if not fits(1):
        return 0
    lo, hi = 1, 2  # exponential search for a bracket: fits(lo) and (hi too far or not fits(hi))
    while hi < MAX_ANSWERS and fits(hi):
        lo, hi = hi, hi * 2
    if hi >= MAX_ANSWERS:
        if fits(MAX_ANSWERS):
            return MAX_ANSWERS
        hi = MAX_ANSWERS
    while hi - lo > 1:  # invariant: fits(lo) and not fits(hi)
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


def answers_that_fit(spend: Spend, mechanism: Mechanism, wanted: int,
                     budget: PrivacyBudget) -> int:
    """How many of `wanted` new answers of `mechanism` keep the total spend within the
    budget (never overspends)."""
    spent = spend.get(mechanism, 0)
    if spent < 0 or wanted < 0:
        raise PrivacyError(f"spent answers and wanted must be >= 0, got {spent} and {wanted}")
    cap = max_answers(budget, mechanism, spend)
    return max(0, min(wanted, cap - spent))


def noise_multiplier_for(target_epsilon: float, answers: int, delta: float, *,
                         name: MechanismName = "gaussian", clip_norm: float = 1.0,
                         teachers: int | None = None) -> float:
    """The smallest σ (to 1e-6 relative) whose `answers` answers cost at most
    `target_epsilon` at δ: how a budget "ε per 1,000 answers" becomes a setting."""
    if not target_epsilon > 0 or answers < 1:
        raise PrivacyError(
            f"need target ε > 0 and answers >= 1, got {target_epsilon} and {answers}")

    def mech(sigma: float) -> Mechanism:
        return Mechanism(name=name, clip_norm=clip_norm, noise_multiplier=sigma,
                         teachers=teachers)

    def fits(sigma: float) -> bool:
        return epsilon_spent(answers, mech(sigma), delta) <= target_epsilon

    hi = 1.0
    while not fits(hi):
        hi *= 2
        if hi > 1e9:
            raise PrivacyError(f"no σ gives ε ≤ {target_epsilon} for {answers} answers")
    lo = hi / 2
    while fits(lo) and lo > 1e-9:
        hi, lo = lo, lo / 2
    while (hi - lo) > 1e-6 * hi:  # invariant: fits(hi) and not fits(lo)
        mid = (lo + hi) / 2
        if fits(mid):
            hi = mid
        else:
            lo = mid
    return hi


def choose_mechanism(*, teachers: int | None, clip_norm: float, noise_multiplier: float | None,
                     budget: PrivacyBudget, budget_answers: int) -> Mechanism:
    """A participant's mechanism: ``teachers`` (C = 1) for a teacher ensemble of K, else
    ``gaussian`` with clip C. Without a σ, the σ that spends ε_max in `budget_answers`."""
    name: MechanismName = "gaussian" if teachers is None else "teachers"
    c = clip_norm if teachers is None else 1.0
    sigma = noise_multiplier if noise_multiplier is not None else noise_multiplier_for(
        budget.epsilon_max, budget_answers, budget.delta, name=name, clip_norm=c,
        teachers=teachers)
    return Mechanism(name=name, clip_norm=c, noise_multiplier=sigma, teachers=teachers)


def per_answer_epsilon(mechanism: Mechanism, delta: float) -> float:
    """ε of a single answer: a participant whose settings make this > 10 warns at start."""
    return epsilon_spent(1, mechanism, delta)


def clip_rows(x: torch.Tensor, clip_norm: float) -> torch.Tensor:
    """Scale each row (dim 0; a 1-D tensor is one row) to L2 norm ≤ `clip_norm`.

    Returns float32 on x's device; rows already inside the ball are returned unchanged.
    Norms are taken in float32 (bf16 would round the bound away) on rows divided by their
    largest |entry|: a huge finite row cannot overflow its norm to inf, a long row is
    rescaled from that unit-peak form (no subnormal scale factor eats its precision),
    and a zero row never divides by zero.
    """
    _check_clip_norm(clip_norm)
    if x.ndim == 0:
        raise ValueError("clip_rows needs at least one dimension (rows); got a scalar")
    x32 = x.to(torch.float32)
    if x32.numel() == 0:
        return x32.clone()
    rows = x32.reshape(x32.shape[0], -1) if x32.ndim > 1 else x32.reshape(1, -1)
    peak = rows.abs().amax(dim=1, keepdim=True).clamp_min_(_TINY)
    unit = rows / peak  # fresh: scaled in place below, `rows` (maybe x itself) is not touched
    unit_norm: torch.Tensor = torch.linalg.vector_norm(unit, ord=2, dim=1, keepdim=True)
    inside = peak.mul_(unit_norm) <= clip_norm  # an overflow to inf correctly says "outside"
    if x32.device.type == "cpu" and bool(inside.all()):
        # Nothing to clip (a softmax row under C >= 1 always): skip the scale and the select
        # (~25 µs of 55 at [1024, 10]). CPU only, where asking costs no device sync.
        return x32.clone()
    clipped = unit.mul_(unit_norm.clamp_min_(_TINY).reciprocal_().mul_(clip_norm))
    return torch.where(inside, rows, clipped).reshape(x32.shape)


def privatize(x: torch.Tensor, mechanism: Mechanism,
              generator: torch.Generator) -> torch.Tensor:
    """Clip every row, then add Gaussian noise drawn on x's device from `generator`.

    The generator must live on x's device; drawing from it (never from global state)
    keeps the noise reproducible for tests and unpredictable when seeded secretly.
    """
    clipped = clip_rows(x, mechanism.clip_norm)
    if mechanism.noise_multiplier == 0:
        return clipped
    noise = torch.randn(clipped.shape, generator=generator, device=clipped.device,
                        dtype=torch.float32)
    # In place on the fresh noise (clipped may alias x): noise·σC + clipped, one buffer.
    return noise.mul_(mechanism.noise_std).add_(clipped)


def release(model_output: torch.Tensor, mechanism: Mechanism,
            generator: torch.Generator) -> torch.Tensor:
    """What a participant publishes for a batch of model outputs: the bounded vector the
    mechanism names (``gaussian``: softmax of the logits; ``teachers``: the ensemble's
    normalized vote histogram, as the ensemble returns it), clipped, plus noise.

    The participant's engine and `fi-stream experiment privacy` both call this, so the
    frontier is measured on exactly what participants release.
    """
    bounded = (softmax_rows(model_output.float()) if mechanism.name == "gaussian"
               else model_output.float())
    return privatize(bounded, mechanism, generator)


#: Below this many classes torch's CPU softmax over the last dim leaves its vectorized
#: kernel (16 float32 lanes of AVX-512): [1024, 10] took 159 µs, the same softmax over
#: dim 0 of the transposed view 19 µs; at 16 classes and more the last-dim kernel wins.
_SHORT_ROW = 16


def softmax_rows(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim, the same function as torch.softmax(x, -1) (values equal
    to a few ulp), taken on the transposed view for short rows on the CPU (_SHORT_ROW)."""
    if x.device.type == "cpu" and x.ndim == 2 and x.shape[1] < _SHORT_ROW:
        return torch.softmax(x.t(), dim=0).t().contiguous()
    return torch.softmax(x, dim=-1)
