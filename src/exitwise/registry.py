"""A small name -> factory registry that refuses duplicates and suggests near matches."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar, overload

T = TypeVar("T")


def did_you_mean(name: object, names: Iterable[str], quote: bool = False) -> str:
    """`` Did you mean a, b?`` naming up to three of ``names`` close to ``name`` (each quoted
    with ``quote``), or ``""`` when none is close."""
    close = difflib.get_close_matches(str(name), list(names), n=3, cutoff=0.5)
    if not close:
        return ""
    return f" Did you mean {', '.join(repr(c) if quote else c for c in close)}?"


class Registry(Generic[T]):
    """Maps names to objects (usually factories).

    Registering a name twice raises; looking up an unknown name raises a ``KeyError`` that lists
    the close matches and every registered name.

    Example:
        >>> BACKBONES = Registry("backbone")
        >>> @BACKBONES.register("tiny")
        ... def tiny(): ...
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T) -> T: ...

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} names must be non-empty strings, got {name!r}")

        def _add(o: T) -> T:
            if name in self._items:
                raise KeyError(
                    f"{self.kind} {name!r} is already registered; pick another name "
                    f"(registered: {', '.join(sorted(self._items))})"
                )
            self._items[name] = o
            return o

        return _add if obj is None else _add(obj)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            hint = did_you_mean(name, self._items, quote=True)
            raise KeyError(
                f"unknown {self.kind} {name!r}.{hint} Available: {', '.join(sorted(self._items))}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
