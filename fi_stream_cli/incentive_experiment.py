"""`fi-stream experiment incentives`: every incentive scheme against strategic participants.

Per (α, seed): five honest digits participants on Dirichlet(α) shards, plus one lazy
(5 % of a sixth shard), random, constant, uniform and copycat participant and a colluding
pair — 12 in one federation, every one answering the 360 test queries through the
participant's own code path (fi_stream.behaviours → softmax → clip → noise, σ·C = 0.3).
The copycat re-sends the best honest participant's noised row, later in the log.

Then exactly what the aggregator does: copies are screened out per query
(`fi_stream.copycat.screen_copies` maths), each scheme scores the window with
`IncentiveWindow` (label-free) or exact Shapley of ensemble accuracy (merit), rewards are
split by `split_rewards`, and each scheme's shares are compared with merit (Spearman ρ,
skill fairness F). A second pass without copy detection shows what a copycat would earn.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fi_stream.behaviours import STRATEGIC, Behaviour, strategic_model
from fi_stream.copycat import flag_copies
from fi_stream.incentives import (
    DEFAULT_METHOD,
    ensemble_accuracy_value,
    shapley_exact,
    skill_fairness,
    spearman,
    split_rewards,
)
from fi_stream.models import load_digits_split, train_participant
from fi_stream.privacy import Mechanism, privatize
from fi_stream.results import IncentiveWindow
from schemas import Result, WindowRef

#: The schemes of the issue, in the table's order (label-free, then merit).
SCHEMES = ("equal_split", "final_agreement", "entropy_score", "loo_agreement", "loo_cosine",
           "loo_confidence_effect", "correlated_agreement", "shapley")
ALPHAS = (0.3, 1.0)
SEEDS = (0, 1, 2)
HONEST = 5
CHANCE = 0.1
#: Who plays what: participant id → behaviour (the copycat copies the best honest one).
ROSTER: dict[str, Behaviour] = {
    **{f"honest-{k + 1}": "honest" for k in range(HONEST)},
    "lazy": "lazy", "random": "random", "constant": "constant", "uniform": "uniform",
    "copycat": "copycat", "colluding-1": "colluding", "colluding-2": "colluding",
}


@dataclass(frozen=True)
class Federation:
    """One (α, seed): every participant's noised rows (Q, C) in log order, and the labels."""

    alpha: float
    seed: int
    rows: dict[str, np.ndarray[Any, Any]]
    labels: np.ndarray[Any, Any]
    copy_of: str
    noise_std: float

    @property
    def ids(self) -> list[str]:
        return sorted(self.rows)

    def solo_accuracy(self) -> dict[str, float]:
        return {p: float((r.argmax(axis=1) == self.labels).mean()) for p, r in self.rows.items()}


def build_federation(alpha: float, seed: int, *, clip_norm: float = 1.0,
                     noise_multiplier: float = 0.3) -> Federation:
    """Train, run every participant's model on the test split, clip and noise its outputs."""
    split = load_digits_split()
    x = torch.from_numpy(split.x_test)
    mechanism = Mechanism(clip_norm=clip_norm, noise_multiplier=noise_multiplier)
    rows: dict[str, np.ndarray[Any, Any]] = {}
    shards = {pid: k for k, pid in enumerate(p for p, b in ROSTER.items() if b == "honest")}
    shards["lazy"] = HONEST
    base, spec = train_participant(shard=0, of=HONEST + 1, alpha=alpha, seed=seed)
    for k, (pid, behaviour) in enumerate(ROSTER.items()):
        if behaviour == "copycat":
            continue
        if pid in shards:
            module, spec = train_participant(shard=shards[pid], of=HONEST + 1, alpha=alpha,
                                             seed=seed, participant_id=pid)
        else:
            module = base
        model = strategic_model(module, spec, behaviour if behaviour != "honest" else "honest",
                                rng=np.random.default_rng([seed, k]),
                                collusion_secret=f"secret-{seed}".encode())
        with torch.inference_mode():
            probs = torch.softmax(model(x).float(), dim=-1)
        generator = torch.Generator().manual_seed(seed * 1000 + k)
        rows[pid] = privatize(probs, mechanism, generator).numpy().astype(np.float64)
    # The copycat copies the most accurate honest participant (the best it can do).
    labels = split.y_test
    honest = [p for p, b in ROSTER.items() if b == "honest"]
    target = max(honest, key=lambda p: float((rows[p].argmax(axis=1) == labels).mean()))
    rows["copycat"] = rows[target].copy()
    return Federation(alpha, seed, rows, labels, target, clip_norm * noise_multiplier)


def log_position(pid: str) -> tuple[int, int]:
    """Everyone answers at once except the copycat, which can only write after its source."""
    return (1 if ROSTER[pid] == "copycat" else 0, sorted(ROSTER).index(pid))


def screened(fed: Federation, detect: bool) -> tuple[list[tuple[list[str], np.ndarray[Any, Any]]],
                                                     dict[str, int]]:
    """Per query: the ids and rows the aggregator would include; and the flags per id."""
    ids = fed.ids
    stack = np.stack([fed.rows[p] for p in ids], axis=1)  # (Q, k, C)
    positions = [log_position(p) for p in ids]
    flagged: dict[str, int] = defaultdict(int)
    out = []
    for q in range(len(stack)):
        keep = list(range(len(ids)))
        if detect:
            copies = flag_copies(stack[q], [fed.noise_std] * len(ids), positions)
            for c in copies:
                flagged[ids[c.index]] += 1
            drop = {c.index for c in copies}
            keep = [j for j in keep if j not in drop]
        out.append(([ids[j] for j in keep], stack[q][keep]))
    return out, dict(flagged)


def score(per_query: Sequence[tuple[list[str], np.ndarray[Any, Any]]], method: str,
          labels: Sequence[int], participants: Sequence[str]) -> dict[str, float]:
    """Each participant's share of one window's reward under `method`, as the services
    compute it (IncentiveWindow for label-free methods, exact Shapley for merit)."""
    if method == "shapley":
        value = ensemble_accuracy_value(per_query, labels)
        scores = shapley_exact(participants, value)
    else:
        window = IncentiveWindow(0, 0, 0, method)
        for q, (ids, x) in enumerate(per_query):
            window.add(_result(q), ids, x)
        current = window.current_scores()
        scores = {p: current.get(p, 0.0) for p in participants}
    return split_rewards(scores, 1.0)


def _result(q: int) -> Result:
    return Result(query_id=f"q{q}", task="digits", status="complete", strategy="soft_vote",
                  quorum=1, created_at_ms=0, deadline_ms=1, completed_at_ms=q,
                  window=WindowRef(partition=0, seq=0))


def run(alphas: Sequence[float] = ALPHAS, seeds: Sequence[int] = SEEDS,
        schemes: Sequence[str] = SCHEMES) -> dict[str, Any]:
    """The whole experiment; the JSON `fi-stream experiment incentives` writes."""
    torch.set_num_threads(1)
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    comparisons: list[dict[str, Any]] = []
    detection = {"copied": 0, "copied_flagged": 0, "honest": 0, "honest_flagged": 0}
    for alpha in alphas:
        for seed in seeds:
            fed = build_federation(alpha, seed)
            solo = fed.solo_accuracy()
            labels = fed.labels.tolist()
            for detect in (True, False):
                per_query, flagged = screened(fed, detect)
                if detect:
                    n = len(labels)
                    detection["copied"] += n
                    detection["copied_flagged"] += flagged.get("copycat", 0)
                    detection["honest"] += n * (len(fed.ids) - 1)
                    detection["honest_flagged"] += sum(v for p, v in flagged.items()
                                                       if p != "copycat")
                shares = {m: score(per_query, m, labels, fed.ids) for m in schemes}
                merit = shares.get("shapley") or score(per_query, "shapley", labels, fed.ids)
                for method, share in shares.items():
                    comparisons.append({
                        "scheme": method, "alpha": alpha, "seed": seed,
                        "copy_detection": detect,
                        "spearman": _finite(spearman(share, merit)),
                        "skill_fairness": _finite(skill_fairness(merit, share))})
                    rows.extend({
                        "scheme": method, "participant": pid, "behaviour": ROSTER[pid],
                        "alpha": alpha, "seed": seed, "copy_detection": detect,
                        "reward_share": share[pid], "solo_accuracy": solo[pid],
                        "copies_flagged": flagged.get(pid, 0),
                    } for pid in fed.ids)
    return {
        "default_scheme": DEFAULT_METHOD,
        "setup": {"alphas": list(alphas), "seeds": list(seeds), "queries": 360,
                  "clip_norm": 1.0, "noise_multiplier": 0.3, "roster": dict(ROSTER),
                  "chance": CHANCE},
        "rows": rows,
        "comparisons": comparisons,
        "detection": {**detection,
                      "detection_rate": detection["copied_flagged"] / max(1, detection["copied"]),
                      "false_flag_rate": detection["honest_flagged"] / max(1, detection["honest"])},
        "goals": goals(rows, DEFAULT_METHOD),
        "wall_s": round(time.perf_counter() - started, 1),
    }


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def goals(rows: Sequence[Mapping[str, Any]], scheme: str, alpha: float = 1.0
          ) -> dict[str, Any]:
    """The issue's goals for `scheme` at `alpha`, per seed, with copy detection on."""
    out: dict[str, Any] = {"scheme": scheme, "alpha": alpha, "seeds": {}}
    seeds = sorted({r["seed"] for r in rows})
    for seed in seeds:
        mine = [r for r in rows if r["scheme"] == scheme and r["alpha"] == alpha
                and r["seed"] == seed and r["copy_detection"]]
        if not mine:
            continue
        out["seeds"][seed] = _seed_goals(mine)
    met = [s["every_strategic_below_every_skilled_honest"]
           and s["strategic_mean_at_most_half_honest"] for s in out["seeds"].values()]
    out["met"] = bool(met) and all(met)
    return out


def _seed_goals(mine: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One seed's rows of the scheme: does every strategic participant earn less than every
    skilled honest one, and the strategic mean at most half the honest mean?"""
    strategic = [r["reward_share"] for r in mine if r["behaviour"] in STRATEGIC]
    honest = [r for r in mine if r["behaviour"] == "honest"]
    skilled = [r["reward_share"] for r in honest if r["solo_accuracy"] >= CHANCE + 0.1]
    honest_mean = float(np.mean([r["reward_share"] for r in honest]))
    return {
        "max_strategic_share": max(strategic), "min_skilled_honest_share": min(skilled),
        "every_strategic_below_every_skilled_honest": max(strategic) < min(skilled),
        "mean_strategic_share": float(np.mean(strategic)), "honest_mean_share": honest_mean,
        "strategic_mean_at_most_half_honest": float(np.mean(strategic)) <= 0.5 * honest_mean,
    }


def table(result: Mapping[str, Any], alpha: float, detect: bool = True) -> str:
    """Markdown: scheme × behaviour → mean reward share over seeds (per participant)."""
    behaviours = ["honest", "lazy", "random", "constant", "uniform", "copycat", "colluding"]
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in result["rows"]:
        if r["alpha"] == alpha and r["copy_detection"] == detect:
            cells[(r["scheme"], r["behaviour"])].append(r["reward_share"])
    rho, fair = _agreement_with_merit(result["comparisons"], alpha, detect)
    undetected: dict[str, list[float]] = defaultdict(list)
    for r in result["rows"]:
        if r["alpha"] == alpha and not r["copy_detection"] and r["behaviour"] == "copycat":
            undetected[r["scheme"]].append(r["reward_share"])
    head = ("| scheme | " + " | ".join(behaviours)
            + " | copycat, undetected | ρ vs merit | F vs merit |")
    lines = [head, "|" + "---|" * (len(behaviours) + 4)]
    for scheme in dict.fromkeys(r["scheme"] for r in result["rows"]):
        vals = [f"{np.mean(cells[(scheme, b)]):.3f}" if cells[(scheme, b)] else "–"
                for b in behaviours]
        mark = " (default)" if scheme == result["default_scheme"] else ""
        lines.append(f"| {scheme}{mark} | " + " | ".join(vals)
                     + f" | {np.mean(undetected[scheme]):.3f}"
                     + f" | {np.mean(rho[scheme]):.2f} | {np.mean(fair[scheme]):.2f} |")
    return "\n".join(lines)


def _agreement_with_merit(comparisons: Sequence[Mapping[str, Any]], alpha: float,
                          detect: bool) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per scheme, at `alpha`: its windows' Spearman ρ and skill fairness F vs. merit."""
    rho: dict[str, list[float]] = defaultdict(list)
    fair: dict[str, list[float]] = defaultdict(list)
    for c in comparisons:
        if c["alpha"] == alpha and c["copy_detection"] == detect:
            if c["spearman"] is not None:
                rho[c["scheme"]].append(c["spearman"])
            if c["skill_fairness"] is not None:
                fair[c["scheme"]].append(c["skill_fairness"])
    return rho, fair


def plot(result: Mapping[str, Any], out: Path) -> None:
    """Bars: mean reward share per behaviour, one group per scheme, one panel per α."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    behaviours = ["honest", "lazy", "random", "constant", "uniform", "copycat", "colluding"]
    schemes = list(dict.fromkeys(r["scheme"] for r in result["rows"]))
    alphas = sorted({r["alpha"] for r in result["rows"]})
    fig, axes = plt.subplots(len(alphas), 1, figsize=(12, 4 * len(alphas)), squeeze=False)
    width = 0.8 / len(behaviours)
    for ax, alpha in zip(axes[:, 0], alphas, strict=True):
        for j, b in enumerate(behaviours):
            means = [np.mean([r["reward_share"] for r in result["rows"]
                              if r["alpha"] == alpha and r["scheme"] == s
                              and r["behaviour"] == b and r["copy_detection"]] or [0.0])
                     for s in schemes]
            ax.bar(np.arange(len(schemes)) + (j - len(behaviours) / 2 + 0.5) * width, means,
                   width, label=b)
        ax.set_xticks(np.arange(len(schemes)),
                      [s + (" *" if s == result["default_scheme"] else "") for s in schemes],
                      rotation=15)
        ax.set_ylabel("reward share (per participant)")
        ax.set_title(f"α = {alpha:g}: 5 honest + 7 strategic participants, mean of "
                     f"{len(result['setup']['seeds'])} seeds (* default)")
        ax.axhline(1 / 12, color="grey", lw=0.5, ls="--")
    axes[0, 0].legend(ncol=len(behaviours), fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
