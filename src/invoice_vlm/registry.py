"""A small generic registry used for schemas and backends, filled from entry points on first use.

Built-in schemas and backends register through the same entry-point groups a third-party package uses
(`SCHEMA_GROUP`, `BACKEND_GROUP`), so the plugin path is exercised by our own code.

Examples:
    A third-party package declares in its ``pyproject.toml``::

        [project.entry-points."invoice_vlm.schemas"]
        customs_form = "my_pkg.schemas:CUSTOMS_FORM"
"""

from __future__ import annotations

import importlib.metadata
import threading
import warnings
from collections.abc import Callable
from typing import Generic, TypeVar

from invoice_vlm.errors import DuplicateNameError, PluginLoadWarning, UnknownNameError

__all__ = ["BACKEND_GROUP", "SCHEMA_GROUP", "Registry"]

SCHEMA_GROUP = "invoice_vlm.schemas"
BACKEND_GROUP = "invoice_vlm.backends"

T = TypeVar("T")


class Registry(Generic[T]):
    """Names mapped to objects of one kind, discovered once from an entry-point group and cached.

    Args:
        kind: what the registry holds, used in messages (``"schema"``).
        group: the entry-point group to discover plugins from.
        check: called on each object before it is registered; returns the object (possibly converted) or raises
            `TypeError` / `ValueError` saying what is wrong.
    """

    def __init__(self, kind: str, group: str, check: Callable[[str, object], T]) -> None:
        self.kind = kind
        self.group = group
        self._check = check
        self._items: dict[str, T] = {}
        self._discovered = False
        self._lock = threading.RLock()

    def register(self, name: str, obj: object, *, replace: bool = False) -> T:
        """Register ``obj`` under ``name``; a taken name is an error unless ``replace`` is true."""
        self._discover()
        return self._add(name, obj, replace=replace)

    def get(self, name: str) -> T:
        """Return the object registered as ``name``; an unknown name's error lists the registered ones."""
        self._discover()
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(name, self.kind, self._items) from None

    def names(self) -> list[str]:
        """The registered names, sorted."""
        self._discover()
        return sorted(self._items)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (mostly for tests and interactive sessions)."""
        self._discover()
        if name not in self._items:
            raise UnknownNameError(name, self.kind, self._items)
        del self._items[name]

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._items

    def reset(self) -> None:
        """Forget every registration; the next use discovers the entry points again."""
        with self._lock:
            self._items.clear()
            self._discovered = False

    def _add(self, name: str, obj: object, *, replace: bool) -> T:
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(
                f"A {self.kind} name must be a Python identifier such as 'pallet_label', got {name!r}."
            )
        with self._lock:
            if name in self._items and not replace:
                raise DuplicateNameError(name, self.kind)
            checked = self._check(name, obj)
            self._items[name] = checked
            return checked

    def _discover(self) -> None:
        if self._discovered:
            return
        with self._lock:
            if self._discovered:
                return
            self._discovered = True
            seen: dict[str, str] = {}
            for ep in importlib.metadata.entry_points(group=self.group):
                if seen.get(ep.name) == ep.value:
                    continue  # the same distribution seen twice (an editable install next to a wheel)
                if ep.name in seen:
                    warnings.warn(
                        f"The {self.kind} plugin {ep.name!r} ({ep.value}) is skipped: the name is already taken by "
                        f"{seen[ep.name]}.",
                        PluginLoadWarning,
                        stacklevel=4,
                    )
                    continue
                seen[ep.name] = ep.value
                try:
                    self._add(ep.name, ep.load(), replace=False)
                except Exception as exc:  # a broken plugin must not break the library
                    warnings.warn(
                        f"The {self.kind} plugin {ep.name!r} ({ep.value}) failed to load and is skipped: "
                        f"{type(exc).__name__}: {exc}",
                        PluginLoadWarning,
                        stacklevel=4,
                    )
