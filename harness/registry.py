"""Name -> object registries (`--task`, `--method`), lm-evaluation-harness style: adding a task or a
method is adding one module that registers itself, never editing the CLI."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from harness.errors import BadInput

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, load_builtins: Callable[[], None]):
        self.kind = kind
        self._load_builtins = load_builtins
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        def decorator(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = entry
            for alias in aliases:
                self._aliases[alias] = name
            return entry

        return decorator

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted(self._entries)

    def resolve(self, name: str) -> tuple[str, T]:
        """(canonical name, entry); an unknown name is a BadInput listing the known ones."""
        self._load_builtins()
        canonical = self._aliases.get(name, name)
        if canonical not in self._entries:
            raise BadInput(f"unknown {self.kind} {name!r} (known: {', '.join(self.names())})")
        return canonical, self._entries[canonical]
