"""Incentive methods by registered name, like `fi_stream.models.architectures.register`:
label-free ones (`register`, run by the aggregator per window) and label-based ones
(`register_labeled`, run by the merit service once labels arrive)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from fi_stream.incentives.base import IncentiveMethod, LabeledMethod
from fi_stream.plugins import PluginRegistry

C = TypeVar("C", bound=type)

_METHODS: PluginRegistry[IncentiveMethod] = PluginRegistry("incentive method")
_LABELED: PluginRegistry[LabeledMethod] = PluginRegistry("label-based incentive method")
#: Label-free methods by name (read-only).
METHODS: Mapping[str, IncentiveMethod] = _METHODS.view
#: Label-based methods by name (read-only).
LABELED_METHODS: Mapping[str, LabeledMethod] = _LABELED.view


def register(name: str) -> Callable[[C], C]:
    """Register one instance of the decorated label-free method under `name`."""
    return _METHODS.register(name)


def register_labeled(name: str) -> Callable[[C], C]:
    """Register one instance of the decorated label-based method under `name`."""
    return _LABELED.register(name)


def known_methods() -> list[str]:
    """The label-free methods, sorted (error messages and listings stay stable)."""
    return _METHODS.names()


def get_method(name: str) -> IncentiveMethod:
    return _METHODS.get(name)


def get_labeled(name: str) -> LabeledMethod:
    return _LABELED.get(name)


def check_method(name: str) -> str:
    """`name` if a registered label-free method, else a one-line ValueError listing the
    choices (what a settings validator raises)."""
    return _METHODS.check(name)
