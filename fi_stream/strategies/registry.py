"""Strategies by registered name: a setting or a query names one, this finds it.

Like `fi_stream.models.architectures.register`: a decorator and a name. A second class
under a name already taken is a bug, not an override.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TypeVar

from fi_stream.errors import ConfigError
from fi_stream.strategies.base import StatefulStrategy, Strategy

S = TypeVar("S", bound=type)

_REGISTRY: dict[str, Strategy] = {}
#: Every registered strategy by name (read-only; `register` adds to it).
STRATEGIES: Mapping[str, Strategy] = MappingProxyType(_REGISTRY)


def register(name: str) -> Callable[[S], S]:
    """Register one instance of the decorated class under `name`."""

    def wrap(cls: S) -> S:
        existing = _REGISTRY.get(name)
        if existing is not None and type(existing) is not cls:
            raise ConfigError(f"strategy {name!r} is already registered; pick another name")
        _REGISTRY[name] = cls()
        return cls

    return wrap


def known_strategies() -> list[str]:
    """Sorted, so error messages and CLI listings are stable."""
    return sorted(_REGISTRY)


def get_strategy(name: str) -> Strategy:
    strategy = _REGISTRY.get(name)
    if strategy is None:
        raise ConfigError(f"unknown aggregation strategy {name!r}; "
                          f"use one of {', '.join(known_strategies())}")
    return strategy


def stateful_strategies() -> dict[str, StatefulStrategy]:
    """The strategies that keep a per-partition history, by name (sorted)."""
    return {n: s for n, s in sorted(_REGISTRY.items()) if isinstance(s, StatefulStrategy)}


def check_strategy(name: str) -> str:
    """`name` if registered, else a one-line ValueError listing the choices (what a
    settings validator raises)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown strategy {name!r}; choose one of "
                         f"{', '.join(known_strategies())}")
    return name
