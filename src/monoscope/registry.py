"""One mechanism for every pluggable part: a named :class:`Registry`.

SAE variants, dictionary parts, autoencoder architectures, model families, data sources,
embedders and unit kinds are each a ``Registry``. A part registers under a name, either
with the decorator form::

    SAE_VARIANTS = Registry("SAE variant")

    @SAE_VARIANTS.register("topk")
    class TopKSAE(...): ...

or with a call for things that are not defined by a ``def``/``class`` statement
(``DATA_SOURCES.add("digits", DigitsSource)``). Lookups by an unknown name raise a
``ValueError`` that lists the known names, so a typo in a config reads as one line (an :class:`UnknownNameError`, both a
``ValueError`` and a ``KeyError``).

A registry behaves as a read-only mapping (``name in registry``, ``registry[name]``,
``sorted(registry)``), which is what the schema and wildcard checks compare against.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """A name no part is registered under. A ``ValueError`` for callers that validate
    config values, a ``KeyError`` so that ``Mapping.get`` and ``in`` behave as usual."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else ""


class Registry(Mapping[str, T], Generic[T]):
    """Named parts of one kind (``what`` names the kind in error messages)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` as ``name``; re-registering the same object is a no-op."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.what} needs a non-empty name, got {name!r}")
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"{self.what} '{name}' is already registered")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def decorate(entry: T) -> T:
            return self.add(name, entry)

        return decorate

    def get_entry(self, name: str) -> T:
        """The entry registered as ``name``; :class:`UnknownNameError` naming the known
        ones otherwise."""
        if name not in self._entries:
            raise UnknownNameError(f"unknown {self.what} '{name}'; known: {sorted(self._entries)}")
        return self._entries[name]

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._entries)

    # Mapping interface ------------------------------------------------------------

    def __getitem__(self, name: str) -> T:
        return self.get_entry(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {sorted(self._entries)})"
