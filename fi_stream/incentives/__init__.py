"""Incentive methods, one file each, registered by name; the window that runs a
label-free one; the reward split and the measures that compare label-free with merit.

To add a label-free method: a new file here with a class decorated `@register("name")`
(see `base.IncentiveMethod`; `base.PerQuerySum` when the window score is a sum of
per-query scores), with `add_batch` if a vectorised path is natural. A label-based one:
`@register_labeled("name")` (see `base.LabeledMethod`, e.g. `shapley.py`). Every module
of this package is imported here, so settings, the aggregator and the auditor accept
the name with no other file edited.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping

from fi_stream.incentives.base import (
    F64,
    BatchedMethod,
    IncentiveMethod,
    LabeledMethod,
    PerQuerySum,
    loo_consensus,
    loo_votes,
    loo_votes_batch,
    sorted_query,
)
from fi_stream.incentives.compare import skill_fairness, spearman
from fi_stream.incentives.correlated_agreement import (
    Tally,
    Votes,
    correlated_agreement_add,
    correlated_agreement_score,
    tally_votes,
)
from fi_stream.incentives.entropy_score import entropy_score
from fi_stream.incentives.equal_split import equal_split
from fi_stream.incentives.final_agreement import final_agreement
from fi_stream.incentives.loo_agreement import loo_agreement, loo_agreement_batch
from fi_stream.incentives.loo_confidence_effect import loo_confidence_effect
from fi_stream.incentives.loo_cosine import loo_cosine
from fi_stream.incentives.registry import (
    LABELED_METHODS,
    METHODS,
    check_method,
    get_labeled,
    get_method,
    known_methods,
    register,
    register_labeled,
)
from fi_stream.incentives.rewards import split_rewards
from fi_stream.incentives.shapley import (
    MAX_EXACT_SHAPLEY,
    Value,
    ensemble_accuracy_value,
    shapley_exact,
    shapley_monte_carlo,
)
from fi_stream.incentives.window import IncentiveWindow, window_scores

#: Modules that hold no method.
_SUPPORT = frozenset({"base", "compare", "registry", "rewards", "window"})

# Sorted: the registries fill in the same order on every machine.
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module not in _SUPPORT:
        importlib.import_module(f"{__name__}.{_module}")

#: Every label-free method an aggregator may be configured with (a live view).
INCENTIVE_METHODS: Mapping[str, IncentiveMethod] = METHODS
#: The aggregator's default: it pays random, constant, uniform and colluding answers ≈ 0
#: (`fi-stream experiment incentives`, README).
DEFAULT_METHOD = "correlated_agreement"


def _per_query() -> dict[str, Callable[[F64], F64]]:
    return {n: m.score for n, m in sorted(METHODS.items()) if isinstance(m, PerQuerySum)}


#: The label-free methods whose window score is a sum of per-query scores: name → the
#: per-query score function, (k, C) outputs → (k,) scores.
LABEL_FREE_METHODS: Mapping[str, Callable[[F64], F64]] = _per_query()

__all__ = [
    "DEFAULT_METHOD",
    "INCENTIVE_METHODS",
    "LABELED_METHODS",
    "LABEL_FREE_METHODS",
    "MAX_EXACT_SHAPLEY",
    "METHODS",
    "BatchedMethod",
    "IncentiveMethod",
    "IncentiveWindow",
    "LabeledMethod",
    "PerQuerySum",
    "Tally",
    "Value",
    "Votes",
    "check_method",
    "correlated_agreement_add",
    "correlated_agreement_score",
    "ensemble_accuracy_value",
    "entropy_score",
    "equal_split",
    "final_agreement",
    "get_labeled",
    "get_method",
    "known_methods",
    "loo_agreement",
    "loo_agreement_batch",
    "loo_confidence_effect",
    "loo_consensus",
    "loo_cosine",
    "loo_votes",
    "loo_votes_batch",
    "register",
    "register_labeled",
    "shapley_exact",
    "shapley_monte_carlo",
    "skill_fairness",
    "sorted_query",
    "spearman",
    "split_rewards",
    "tally_votes",
    "window_scores",
]
