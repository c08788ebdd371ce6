"""Label smoothing chosen on evidence (issue 18): solo and ensemble accuracy, and the
robust strategies under a garbage participant, with smoothing 0 and 0.1 across seeds.

    python benchmarks/label_smoothing.py --seeds 4 \
        --out benchmarks/2026-12-02-cpu2/label-smoothing.json

Five participants on Dirichlet(α) shards of digits, outputs noised as published
(σ = 0.3, C = 1), soft vote for the ensemble; the attack replaces participant 5's outputs
with N(0, 5²) noise and compares median / trimmed mean with the honest four's soft vote.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import fi_stream.models.train as train
from fi_stream.aggregation import aggregate
from fi_stream.models import load_digits_split, train_participant
from fi_stream.privacy import GaussianMechanism, privatize

PARTICIPANTS = 5


def accuracy(outputs: np.ndarray, labels: np.ndarray, strategy: str) -> float:
    return float(np.mean([aggregate(o, strategy).prediction == y
                          for o, y in zip(outputs, labels, strict=True)]))


def one(smoothing: float, alpha: float, seed: int) -> dict[str, Any]:
    train.LABEL_SMOOTHING = smoothing  # a measurement override of the default
    split = load_digits_split()
    mechanism = GaussianMechanism(clip_norm=1.0, noise_multiplier=0.3)
    rows, solo = [], []
    for k in range(PARTICIPANTS):
        module, spec = train_participant(shard=k, of=PARTICIPANTS, alpha=alpha, seed=seed)
        solo.append(spec.metrics["test_accuracy"])
        with torch.inference_mode():
            probs = torch.softmax(module(torch.from_numpy(split.x_test)), dim=1)
        rows.append(privatize(probs, mechanism,
                              torch.Generator().manual_seed(seed * 100 + k)).numpy())
    outputs = np.stack(rows, axis=1).astype(np.float64)
    attacked = outputs.copy()
    attacked[:, -1, :] = np.random.default_rng(seed).normal(0, 5, attacked[:, -1, :].shape)
    honest = accuracy(outputs[:, :-1, :], split.y_test, "soft_vote")
    return {
        "smoothing": smoothing, "alpha": alpha, "seed": seed,
        "solo_mean": float(np.mean(solo)), "ensemble": accuracy(outputs, split.y_test,
                                                                "soft_vote"),
        "honest4": honest,
        "median_attacked": accuracy(attacked, split.y_test, "median"),
        "trimmed_attacked": accuracy(attacked, split.y_test, "trimmed_mean"),
        "soft_vote_attacked": accuracy(attacked, split.y_test, "soft_vote"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.3, 1.0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    runs = [one(s, a, seed) for s in (0.0, 0.1) for a in args.alphas
            for seed in range(args.seeds)]
    summary = []
    for s in (0.0, 0.1):
        for a in args.alphas:
            sel = [r for r in runs if r["smoothing"] == s and r["alpha"] == a]
            row = {"smoothing": s, "alpha": a, "seeds": len(sel)}
            for key in ("solo_mean", "ensemble", "honest4", "median_attacked",
                        "trimmed_attacked", "soft_vote_attacked"):
                row[key] = float(np.mean([r[key] for r in sel]))
            for key in ("median_attacked", "trimmed_attacked"):
                row[f"worst_{key}_minus_honest4"] = min(r[key] - r["honest4"] for r in sel)
            summary.append(row)
            print(json.dumps(row))
    doc = {"benchmark": "label_smoothing", "participants": PARTICIPANTS,
           "noise_multiplier": 0.3, "clip_norm": 1.0, "seconds": time.perf_counter() - started,
           "summary": summary, "runs": runs}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
