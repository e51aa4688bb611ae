"""Scopes of custom objects, and carrying the active scope into other processes."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from kregistry._store import GLOBAL_LAYER, Layer, current_layer, set_layer

__all__ = [
    "CustomObjectScope",
    "custom_object_scope",
    "ScopeSnapshot",
    "capture_scope",
    "ScopedWorkerInit",
]


def _merge(mappings: tuple[Any, ...]) -> dict[str, Any]:
    if len(mappings) == 1 and type(mappings[0]) is dict:
        # The common case, kept cheap: one plain dict with str keys.
        for name in mappings[0]:
            if type(name) is not str:
                break
        else:
            return mappings[0].copy()
    merged: dict[str, Any] = {}
    for position, mapping in enumerate(mappings):
        if mapping is None:
            continue
        if not isinstance(mapping, Mapping):
            raise TypeError(
                f"CustomObjectScope takes mappings of name -> object; argument {position} "
                f"is {mapping!r} ({type(mapping).__name__})"
            )
        for name in mapping:
            if not isinstance(name, str):
                raise TypeError(
                    f"custom object names must be str; argument {position} has the key "
                    f"{name!r} ({type(name).__name__})"
                )
        merged.update(mapping)
    return merged


class CustomObjectScope:
    """A ``with`` block in which the given objects can be found by name.

    Changes made to the custom objects inside the block last until its end; then the
    objects are exactly what they were when the block began (also when it raises).
    Scopes nest (an inner scope sees the outer one's objects), a scope object can be
    entered again, and scopes are per context: another thread or asyncio task does
    not see them.

    Args:
        *mappings: dicts of name -> object; later ones win on equal names. ``None``
            is ignored.

    Raises:
        TypeError: an argument is not a mapping, or has a key that is not a str.
        RuntimeError: scopes are left in a different order than they were entered.

    Examples:
        >>> from kregistry import get_custom_objects, resolve
        >>> class MyObject:
        ...     pass
        >>> with CustomObjectScope({"MyObject": MyObject}):
        ...     resolve("MyObject") is MyObject
        True
        >>> "MyObject" in get_custom_objects()
        False
    """

    def __init__(self, *mappings: Mapping[str, Any] | None) -> None:
        self.custom_objects = _merge(mappings)

    def __enter__(self) -> CustomObjectScope:
        set_layer(current_layer().child(self.custom_objects, owner=self))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        layer = current_layer()
        if layer.owner is not self or layer.parent is None:
            raise RuntimeError(
                "CustomObjectScope exited out of order: the innermost active scope in this "
                "context is not the one being closed"
            )
        set_layer(layer.parent)

    def __repr__(self) -> str:
        return f"CustomObjectScope({self.custom_objects!r})"


def custom_object_scope(*mappings: Mapping[str, Any] | None) -> CustomObjectScope:
    """Return a :class:`CustomObjectScope`; Keras's spelling of the same thing.

    Examples:
        >>> from kregistry import resolve
        >>> with custom_object_scope({"absolute": abs}):
        ...     resolve("absolute")(-3)
        3
    """
    return CustomObjectScope(*mappings)


class ScopeSnapshot:
    """What the active scopes changed, frozen so that it can travel to another process.

    It holds the objects the scopes added or replaced and the names they hid, relative
    to the registry. Pickle it (DataLoader does, for ``spawn`` workers) and call
    :meth:`install` or use it as a context manager in the other process: that process
    then resolves the same names, on top of its own registry.

    Raises (when pickled):
        TypeError: an object of the scope cannot be pickled (a lambda, a local class);
            the message names it.
    """

    __slots__ = ("added", "removed")

    def __init__(self, added: dict[str, Any], removed: frozenset[str]) -> None:
        self.added = added
        self.removed = removed

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)

    def __getstate__(self) -> dict[str, Any]:
        for name, obj in self.added.items():
            try:
                pickle.dumps(obj)
            except Exception as error:
                raise TypeError(
                    f"the scope object {name!r} ({obj!r}) cannot be pickled, so it cannot "
                    f"be carried into another process; define it at module level "
                    f"({type(error).__name__}: {error})"
                ) from None
        return {"added": self.added, "removed": self.removed}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.added = state["added"]
        self.removed = state["removed"]

    def _layer(self, owner: object) -> Layer:
        layer = current_layer().child(self.added, owner=owner)
        for name in self.removed:
            layer.objects.pop(name, None)
        return layer

    def install(self) -> None:
        """Make the snapshot's objects visible in this context for good (no exit).

        Meant for a worker process: call it once at start-up.
        """
        if self:
            set_layer(self._layer(owner=self))

    def __enter__(self) -> ScopeSnapshot:
        set_layer(self._layer(owner=self))
        return self

    def __exit__(self, *exc_info: object) -> None:
        layer = current_layer()
        if layer.owner is not self or layer.parent is None:
            raise RuntimeError("ScopeSnapshot exited out of order")
        set_layer(layer.parent)

    def __repr__(self) -> str:
        return f"ScopeSnapshot(added={sorted(self.added)}, removed={sorted(self.removed)})"


def capture_scope() -> ScopeSnapshot:
    """Capture what the active scopes of this context add to or hide from the registry.

    Examples:
        >>> import pickle
        >>> from kregistry import resolve
        >>> with custom_object_scope({"absolute": abs}):
        ...     snap = capture_scope()
        >>> carried = pickle.loads(pickle.dumps(snap))  # what another process receives
        >>> with carried:
        ...     resolve("absolute") is abs
        True
    """
    layer = current_layer()
    if layer is GLOBAL_LAYER:
        return ScopeSnapshot({}, frozenset())
    base = GLOBAL_LAYER.objects
    added = {
        name: obj
        for name, obj in layer.objects.items()
        if name not in base or base[name] is not obj
    }
    deleted: set[str] = set()
    scope: Layer | None = layer
    while scope is not None:
        deleted |= scope.deleted or set()
        scope = scope.parent
    # Only what a scope deleted is hidden: names registered globally meanwhile (by
    # another thread, say) stay visible in the other process too.
    removed = frozenset(name for name in deleted if name not in layer.objects)
    return ScopeSnapshot(added, removed)


class ScopedWorkerInit:
    """A DataLoader ``worker_init_fn`` that installs a scope in each worker.

    Args:
        snapshot: the scope to carry; by default the one active where this is created.
        then: the user's own ``worker_init_fn``, called afterwards with the worker id.

    Examples:
        >>> from kregistry import get_registered_object
        >>> with custom_object_scope({"absolute": abs}):
        ...     init = ScopedWorkerInit()  # DataLoader(..., worker_init_fn=init)
        >>> import threading
        >>> seen = []
        >>> def worker():  # stands in for a worker process: a context of its own
        ...     init(0)
        ...     seen.append(get_registered_object("absolute"))
        >>> thread = threading.Thread(target=worker)
        >>> thread.start(); thread.join()
        >>> seen == [abs] and get_registered_object("absolute") is None
        True
    """

    def __init__(
        self,
        snapshot: ScopeSnapshot | None = None,
        then: Callable[[int], None] | None = None,
    ) -> None:
        if then is not None and not callable(then):
            raise TypeError(f"then must be callable or None, got {then!r}")
        self.snapshot = capture_scope() if snapshot is None else snapshot
        self.then = then

    def __call__(self, worker_id: int) -> None:
        self.snapshot.install()
        if self.then is not None:
            self.then(worker_id)
