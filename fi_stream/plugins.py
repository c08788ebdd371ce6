"""Plug-ins by name, for strategies and incentive methods (like
`fi_stream.models.architectures.register`): a decorator registers one instance of a class
under a name; lookups fail with one line that lists the choices. A second class under a
name already taken is a bug, not an override."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Generic, TypeVar

from fi_stream.errors import ConfigError

T = TypeVar("T")
C = TypeVar("C", bound=type)


class PluginRegistry(Generic[T]):
    """Instances by name. `noun` names one in errors ("strategy"); `lookup_noun`, if
    given, names it where a lookup fails ("aggregation strategy")."""

    def __init__(self, noun: str, lookup_noun: str | None = None) -> None:
        self._items: dict[str, T] = {}
        self.noun = noun
        self.lookup_noun = lookup_noun or noun
        #: Every registered instance by name (read-only; `register` adds to it).
        self.view: Mapping[str, T] = MappingProxyType(self._items)

    def register(self, name: str) -> Callable[[C], C]:
        """Register one instance of the decorated class under `name`."""

        def wrap(cls: C) -> C:
            existing = self._items.get(name)
            if existing is not None and type(existing) is not cls:
                raise ConfigError(f"{self.noun} {name!r} is already registered; "
                                  "pick another name")
            self._items[name] = cls()
            return cls

        return wrap

    def names(self) -> list[str]:
        """Sorted, so error messages and CLI listings are stable."""
        return sorted(self._items)

    def get(self, name: str) -> T:
        item = self._items.get(name)
        if item is None:
            raise ConfigError(f"unknown {self.lookup_noun} {name!r}; "
                              f"use one of {', '.join(self.names())}")
        return item

    def check(self, name: str) -> str:
        """`name` if registered, else a one-line ValueError listing the choices (what a
        settings validator raises)."""
        if name not in self._items:
            raise ValueError(f"unknown {self.noun} {name!r}; choose one of "
                             f"{', '.join(self.names())}")
        return name
