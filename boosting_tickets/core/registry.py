"""One registry per extension axis: named entries, read-only, extended only by plugin modules.

Every axis (datasets, model families, attacks, objectives, pruning criteria, controls, arm kinds,
tables) keeps its built-in entries as an immutable tuple next to the code they describe, and exposes
one accessor that returns a :class:`Registry`: those built-ins plus the entries that plugin modules
declare (:mod:`boosting_tickets.core.plugins`). CLI choices, validation, the cost model and help
text read names and properties from these registries and from nowhere else.

An entry is any object with a ``name`` attribute (a frozen dataclass in practice). Registry objects
never change; loading another plugin gives another registry.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from .errors import UserError


class Named(Protocol):
    name: str


@dataclass(frozen=True)
class Entry:
    """Base of most registry entries: a name and a one-line description (help texts, doctor)."""

    name: str
    description: str


E = TypeVar("E", bound=Named)


class Registry(Generic[E]):
    """Entries of one axis by name, in declaration order (built-ins first, then plugins).

    ``kind`` is the singular noun used in messages ("attack", "dataset", ...). Duplicate names are
    refused: a plugin cannot silently replace a built-in.
    """

    def __init__(self, kind: str, entries: Iterable[E]) -> None:
        self.kind = kind
        self._entries: dict[str, E] = {}
        for entry in entries:
            if entry.name in self._entries:
                raise UserError(
                    f"two {kind} entries are named '{entry.name}' (a plugin repeats a name); "
                    "rename one of them"
                )
            self._entries[entry.name] = entry

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def get(self, name: str, *, flag: str | None = None) -> E:
        """The entry called ``name``; an unknown name raises a UserError listing the valid ones."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            where = f" for {flag}" if flag else ""
            raise UserError(
                f"unknown {self.kind} {name!r}{where}; choose one of: {', '.join(self.names)}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[E]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind}: {', '.join(self.names)})"


def build_registry(kind: str, builtins: tuple[Any, ...], plugin_attr: str) -> Registry:
    """``builtins`` plus the entries plugin modules declare under ``plugin_attr``.

    Cached per (axis, plugin list): the plugin list is read from the environment on every call, so
    a changed ``BOOSTING_TICKETS_PLUGINS`` gives a fresh registry, and the same one gives the same
    object without any work.
    """
    from .plugins import ENV

    return _cached(kind, builtins, plugin_attr, os.environ.get(ENV, ""))


@functools.lru_cache(maxsize=64)
def _cached(kind: str, builtins: tuple[Any, ...], plugin_attr: str, plugins: str) -> Registry:
    from .plugins import contributions

    return Registry(kind, (*builtins, *contributions(plugin_attr, plugins)))
