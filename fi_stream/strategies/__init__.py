"""Aggregation strategies, one file each, registered by name.

To add one: a new file here with a class decorated `@register("name")` that has
`takes_weights` and `aggregate(outputs, **params)` (see `base.Strategy`); a strategy
with a per-partition history also has `state_key` and `from_state` (`base.StatefulStrategy`,
e.g. `reward_weighted.py`). Every module of this package is imported here, so settings,
queries, the aggregator and the auditor accept the name with no other file edited.
"""

from __future__ import annotations

import importlib
import pkgutil

from fi_stream.strategies.base import F64, StatefulStrategy, Strategy, StrategyState
from fi_stream.strategies.registry import (
    STRATEGIES,
    check_strategy,
    get_strategy,
    known_strategies,
    register,
    stateful_strategies,
)

#: Modules that hold no strategy.
_SUPPORT = frozenset({"base", "registry"})

# Sorted: the registry fills in the same order on every machine.
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module not in _SUPPORT:
        importlib.import_module(f"{__name__}.{_module}")

__all__ = ["F64", "STRATEGIES", "StatefulStrategy", "Strategy", "StrategyState",
           "check_strategy", "get_strategy", "known_strategies", "register", "stateful_strategies"]
