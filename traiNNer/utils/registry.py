"""Name -> object registries, looked up case-insensitively by lowercase name."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from traiNNer.utils.errors import ConfigError, did_you_mean

T = TypeVar("T", bound=Callable[..., Any])
F = TypeVar("F", bound=Callable[..., Any])


class Registry(Generic[T]):
    """Maps lowercase names to classes or factory functions.

    Config files may spell a name in any case (`AdamW`, `adamw`); registration
    stores the lowercase form and lookups lowercase the query.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        # Names known from traiNNer-redux but not provided, with the reason why.
        self._refused: dict[str, str] = {}

    def register(self, name: str | None = None) -> Callable[[F], F]:
        """Decorator; the decorated class or function keeps its own type."""

        def decorator(obj: F) -> F:
            self.add(name or obj.__name__, obj)  # type: ignore[arg-type]
            return obj

        return decorator

    def add(self, name: str, obj: T, *, replace: bool = False) -> None:
        """Register `obj`; a second entry under one name raises unless `replace`."""
        key = name.lower()
        if key in self._entries and not replace:
            raise KeyError(f"{self.kind} '{key}' is registered twice")
        self._entries[key] = obj

    def refuse(self, name: str, reason: str) -> None:
        """Make looking up `name` (not registered) fail with `reason` instead of 'unknown'."""
        self._refused[name.lower()] = reason

    def find(self, name: str) -> T | None:
        """The entry for `name`, or None (no error)."""
        return self._entries.get(name.lower())

    def get(self, name: str, path: str = "type") -> T:
        """Return the entry for `name`; `path` names the YAML key in the error."""
        key = name.lower()
        if key not in self._entries and key in self._refused:
            raise ConfigError(f"{path}: '{name}' {self._refused[key]}")
        if key not in self._entries:
            hint = did_you_mean(key, self._entries)
            raise ConfigError(
                f"{path}: unknown {self.kind} '{name}'{hint} "
                f"(accepted: {', '.join(sorted(self._entries))})"
            )
        return self._entries[key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def names(self) -> list[str]:
        return sorted(self._entries)


ARCH_REGISTRY: Registry[Callable[..., Any]] = Registry("arch")
DATASET_REGISTRY: Registry[Callable[..., Any]] = Registry("dataset")
LOSS_REGISTRY: Registry[Callable[..., Any]] = Registry("loss")
METRIC_REGISTRY: Registry[Callable[..., Any]] = Registry("metric")
OPTIMIZER_REGISTRY: Registry[Callable[..., Any]] = Registry("optimizer")
SCHEDULER_REGISTRY: Registry[Callable[..., Any]] = Registry("scheduler")
