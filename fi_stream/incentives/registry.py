"""Incentive methods by registered name, like `fi_stream.models.architectures.register`:
label-free ones (`register`, run by the aggregator per window) and label-based ones
(`register_labeled`, run by the merit service once labels arrive)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

from fi_stream.errors import ConfigError
from fi_stream.incentives.base import IncentiveMethod, LabeledMethod

C = TypeVar("C", bound=type)

_METHODS: dict[str, IncentiveMethod] = {}
_LABELED: dict[str, LabeledMethod] = {}
#: Label-free methods by name (read-only).
METHODS: Mapping[str, IncentiveMethod] = MappingProxyType(_METHODS)
#: Label-based methods by name (read-only).
LABELED_METHODS: Mapping[str, LabeledMethod] = MappingProxyType(_LABELED)


def _add(registry: dict[str, Any], what: str, name: str) -> Callable[[C], C]:
    def wrap(cls: C) -> C:
        existing = registry.get(name)
        if existing is not None and type(existing) is not cls:
            raise ConfigError(f"{what} {name!r} is already registered; pick another name")
        registry[name] = cls()
        return cls

    return wrap


def register(name: str) -> Callable[[C], C]:
    """Register one instance of the decorated label-free method under `name`."""
    return _add(_METHODS, "incentive method", name)


def register_labeled(name: str) -> Callable[[C], C]:
    """Register one instance of the decorated label-based method under `name`."""
    return _add(_LABELED, "label-based incentive method", name)


def known_methods() -> list[str]:
    """The label-free methods, sorted (error messages and listings stay stable)."""
    return sorted(_METHODS)


def get_method(name: str) -> IncentiveMethod:
    method = _METHODS.get(name)
    if method is None:
        raise ConfigError(f"unknown incentive method {name!r}; "
                          f"use one of {', '.join(known_methods())}")
    return method


def get_labeled(name: str) -> LabeledMethod:
    method = _LABELED.get(name)
    if method is None:
        raise ConfigError(f"unknown label-based incentive method {name!r}; "
                          f"use one of {', '.join(sorted(_LABELED))}")
    return method


def check_method(name: str) -> str:
    """`name` if a registered label-free method, else a one-line ValueError listing the
    choices (what a settings validator raises)."""
    if name not in _METHODS:
        raise ValueError(f"unknown incentive method {name!r}; choose one of "
                         f"{', '.join(known_methods())}")
    return name
