"""Name -> component registries, so configs choose components by name."""
from __future__ import annotations

from typing import Callable, Dict, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of components (models, losses, methods, scenes, ...).

    Each entry may carry an option dataclass (``config=``): a config's
    :class:`tfloc.config.OneOf` over this registry then accepts exactly those
    options under the entry's name.

    Parameters
    ----------
    kind : str
        What the registry holds, used in error messages ("model", "loss").
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: Dict[str, T] = {}
        self._configs: Dict[str, type | None] = {}
        self._info: Dict[str, dict] = {}

    def register(self, name: str, config: type | None = None, **info) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name`` (with its option dataclass and any
        facts the registry's users read back with :meth:`info`, e.g. an evaluator's needs)."""
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._items[name] = obj
            self._configs[name] = config
            self._info[name] = dict(info)
            return obj
        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} '{name}'; registered: "
                           f"{', '.join(sorted(self._items))}") from None

    def config(self, name: str) -> type | None:
        """The option dataclass registered with ``name`` (None: no options)."""
        self.get(name)
        return self._configs[name]

    def info(self, name: str) -> dict:
        """The facts registered with ``name``."""
        self.get(name)
        return self._info[name]

    def names(self):
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
