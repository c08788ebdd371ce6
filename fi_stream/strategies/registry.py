"""Strategies by registered name: a setting or a query names one, this finds it.

Like `fi_stream.models.architectures.register`: a decorator and a name. A second class
under a name already taken is a bug, not an override.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from fi_stream.plugins import PluginRegistry
from fi_stream.strategies.base import StatefulStrategy, Strategy

S = TypeVar("S", bound=type)

_REGISTRY: PluginRegistry[Strategy] = PluginRegistry("strategy", "aggregation strategy")
#: Every registered strategy by name (read-only; `register` adds to it).
STRATEGIES: Mapping[str, Strategy] = _REGISTRY.view


def register(name: str) -> Callable[[S], S]:
    """Register one instance of the decorated class under `name`."""
    return _REGISTRY.register(name)


def known_strategies() -> list[str]:
    """Sorted, so error messages and CLI listings are stable."""
    return _REGISTRY.names()


def get_strategy(name: str) -> Strategy:
    return _REGISTRY.get(name)


def stateful_strategies() -> dict[str, StatefulStrategy]:
    """The strategies that keep a per-partition history, by name (sorted)."""
    return {n: s for n, s in sorted(STRATEGIES.items()) if isinstance(s, StatefulStrategy)}


def check_strategy(name: str) -> str:
    """`name` if registered, else a one-line ValueError listing the choices (what a
    settings validator raises)."""
    return _REGISTRY.check(name)
