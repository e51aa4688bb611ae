"""The storage behind the registry: one layer per active scope, chosen per context.

A *layer* is a plain dict of ``name -> object`` plus the names that ``register`` gave
to objects. The global layer lives for the whole process. Entering a scope pushes a
new layer that starts as a copy of the layer below it plus the scope's own objects;
every read and write made through `get_custom_objects()` goes to the top layer of
the calling context, and leaving the scope simply drops that layer. The layer below
was never touched, so it is restored exactly, whatever the block did.

The top layer is held in a `contextvars.ContextVar`, so threads and asyncio
tasks each see their own scopes.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from contextvars import ContextVar
from typing import Any

__all__ = ["Layer", "CustomObjects", "current_layer", "set_layer", "GLOBAL_LAYER"]


class Layer:
    """One level of the registry: objects by name, and registered names by object id."""

    __slots__ = ("_owns_names", "deleted", "names", "objects", "owner", "parent", "unavailable")

    def __init__(
        self,
        objects: dict[str, Any],
        names: dict[int, str],
        parent: Layer | None = None,
        owner: object | None = None,
    ) -> None:
        self.objects = objects
        self.names = names
        # Names are shared with the parent until this layer first changes them: most
        # scopes never register anything, and entering one should stay cheap.
        self._owns_names = parent is None
        # Names deleted through this layer: what a captured scope must hide elsewhere.
        self.deleted: set[str] | None = None
        self.parent = parent
        self.owner = owner
        # Names a parent process's scope held but could not send here (name -> why).
        self.unavailable: dict[str, str] | None = parent.unavailable if parent else None

    def child(self, updates: dict[str, Any], owner: object) -> Layer:
        """A new layer on top of this one, seeded with a copy of it plus ``updates``."""
        return Layer({**self.objects, **updates}, self.names, parent=self, owner=owner)

    def writable_names(self) -> dict[int, str]:
        """This layer's own names dict, copied from the parent's on first use."""
        if not self._owns_names:
            self.names = self.names.copy()
            self._owns_names = True
        return self.names

    def forget(self, names: list[str]) -> None:
        """Record names deleted through this (scope) layer."""
        if self.parent is not None:
            if self.deleted is None:
                self.deleted = set()
            self.deleted.update(names)


GLOBAL_LAYER = Layer({}, {})
_current: ContextVar[Layer] = ContextVar("kregistry_layer", default=GLOBAL_LAYER)


def current_layer() -> Layer:
    """The layer that the calling context reads and writes."""
    return _current.get()


def set_layer(layer: Layer) -> None:
    _current.set(layer)


class CustomObjects(MutableMapping[str, Any]):
    """The live mapping of custom objects, as the calling context sees it.

    Outside any scope it reads and writes the process-wide registry. Inside a
    `CustomObjectScope` it shows the scope's objects as well, and
    changes made through it last until the scope ends, as in Keras 2.
    """

    __slots__ = ()

    def __getitem__(self, name: str) -> Any:
        return _current.get().objects[name]

    def __setitem__(self, name: str, obj: Any) -> None:
        if not isinstance(name, str):
            raise TypeError(
                f"custom object names must be str, got {name!r} ({type(name).__name__})"
            )
        _current.get().objects[name] = obj

    def __delitem__(self, name: str) -> None:
        layer = _current.get()
        obj = layer.objects.pop(name)
        layer.forget([name])
        if layer.names.get(id(obj)) == name:
            del layer.writable_names()[id(obj)]

    def __iter__(self) -> Iterator[str]:
        return iter(_current.get().objects)

    def __len__(self) -> int:
        return len(_current.get().objects)

    def __contains__(self, name: object) -> bool:
        return name in _current.get().objects

    def get(self, name: str, default: Any = None) -> Any:
        return _current.get().objects.get(name, default)

    def clear(self) -> None:
        layer = _current.get()
        layer.forget(list(layer.objects))
        layer.objects.clear()
        layer.writable_names().clear()

    def copy(self) -> dict[str, Any]:
        """A plain dict snapshot of what the calling context sees now."""
        return _current.get().objects.copy()

    def __repr__(self) -> str:
        return f"CustomObjects({_current.get().objects!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CustomObjects):
            return True
        if isinstance(other, dict):
            return _current.get().objects == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]
