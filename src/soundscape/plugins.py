"""Plugin discovery: one registry per entry-point group (``soundscape.models`` for embedders,
``soundscape.transcribers`` for speech-to-text), holding the built-ins and whatever installed
packages declare in that group.

A plugin is a class named ``"module:attribute"`` under a registry name; it is imported only
when asked for (listing names imports nothing), and ``load`` instantiates it after its
``unavailable_reason()`` said it can run here. Built-ins are listed beside the entry points so
that the package also works from a source tree that is not installed (entry points then do
not exist); an installed entry point of the same name takes their place.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any, Generic, Protocol, TypeVar

from soundscape.errors import ModelUnavailable, SoundscapeError


class Plugin(Protocol):
    """What a registry needs of a plugin class: whether it can run here."""

    @classmethod
    def unavailable_reason(cls) -> str | None: ...


P = TypeVar("P", bound=Plugin)


class Registry(Generic[P]):
    """The plugins of one entry-point group, by lower-case name.

    ``kind`` names them in errors (``unknown model 'x'; available: ...``) and ``hint`` ends
    that message (e.g. where to see them listed).
    """

    def __init__(self, group: str, builtins: dict[str, str], kind: str, hint: str = "") -> None:
        self.group = group
        self.kind = kind
        self.hint = hint
        self._builtins = dict(builtins)
        self._found: dict[str, str] | None = None

    def targets(self) -> dict[str, str]:
        """Registry name -> ``"module:attribute"``, built-ins then entry points (read once)."""
        if self._found is None:
            found = dict(self._builtins)
            for ep in entry_points(group=self.group):
                found[ep.name] = ep.value
            self._found = found
        return self._found

    def names(self) -> list[str]:
        return sorted(self.targets())

    def __contains__(self, name: str) -> bool:
        """True if ``name`` (as a user types it: any case, spaces around) is registered."""
        return name.strip().lower() in self.targets()

    def get(self, name: str) -> type[P]:
        """The class registered as ``name``; ``SoundscapeError`` listing the names if none."""
        targets = self.targets()
        key = name.strip().lower()
        if key not in targets:
            raise SoundscapeError(
                f"unknown {self.kind} {name!r}; available: {', '.join(sorted(targets))}{self.hint}"
            )
        module_name, _, attr = targets[key].partition(":")
        return getattr(importlib.import_module(module_name), attr)

    def load(self, name: str, **params: Any) -> P:
        """An instance of ``name``; ``ModelUnavailable`` with the fix when it cannot run here."""
        cls = self.get(name)
        reason = cls.unavailable_reason()
        if reason:
            raise ModelUnavailable(f"model {name!r} is not available: {reason}")
        return cls(**params)
