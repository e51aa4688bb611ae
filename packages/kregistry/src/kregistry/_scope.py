"""Scopes of custom objects, and carrying the active scope into other processes."""

from __future__ import annotations

import logging
import pickle
import warnings
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from kregistry._store import GLOBAL_LAYER, Layer, current_layer, set_layer

_log = logging.getLogger("kregistry")

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
    """Return a `CustomObjectScope`; Keras's spelling of the same thing.

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
    to the registry. Pickle it (DataLoader does, for `spawn` workers) and call
    `install()` or use it as a context manager in the other process: that process
    then resolves the same names, on top of its own registry.

    Objects that cannot be pickled (a lambda, a local class) are left behind with one
    warning per name, so a loader whose workers never use them still works; in the other
    process, asking for such a name raises `UnknownObjectError` saying why it is missing.

    Args:
        added: objects by name that the scopes added or replaced.
        removed: names the scopes hid.
        unavailable: names left behind, each with the reason.
    """

    __slots__ = ("added", "removed", "unavailable")

    def __init__(
        self,
        added: dict[str, Any],
        removed: frozenset[str],
        unavailable: Mapping[str, str] | None = None,
    ) -> None:
        self.added = added
        self.removed = removed
        self.unavailable = dict(unavailable or {})

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.unavailable)

    def __getstate__(self) -> dict[str, Any]:
        carried: dict[str, Any] = {}
        unavailable = dict(self.unavailable)
        for name, obj in self.added.items():
            try:
                pickle.dumps(obj)
            except Exception as error:
                reason = f"{obj!r} cannot be pickled: {type(error).__name__}: {error}"
                unavailable[name] = reason
                _warn_left_behind(name, reason)
            else:
                carried[name] = obj
        return {"added": carried, "removed": self.removed, "unavailable": unavailable}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.added = state["added"]
        self.removed = state["removed"]
        self.unavailable = state.get("unavailable", {})

    def _layer(self, owner: object) -> Layer:
        layer = current_layer().child(self.added, owner=owner)
        for name in self.removed:
            layer.objects.pop(name, None)
        if self.unavailable:
            layer.unavailable = {**(layer.unavailable or {}), **self.unavailable}
        return layer

    def install(self) -> None:
        """Make the snapshot's objects visible in this context for good (no exit).

        Meant for a worker process: call it once at start-up.
        """
        if self:
            set_layer(self._layer(owner=self))
            _log.debug(
                "scope installed in this process: %d objects, %d hidden, %d left behind",
                len(self.added),
                len(self.removed),
                len(self.unavailable),
            )

    def __enter__(self) -> ScopeSnapshot:
        set_layer(self._layer(owner=self))
        return self

    def __exit__(self, *exc_info: object) -> None:
        layer = current_layer()
        if layer.owner is not self or layer.parent is None:
            raise RuntimeError("ScopeSnapshot exited out of order")
        set_layer(layer.parent)

    def __repr__(self) -> str:
        left = f", unavailable={sorted(self.unavailable)}" if self.unavailable else ""
        return f"ScopeSnapshot(added={sorted(self.added)}, removed={sorted(self.removed)}{left})"


_warned: set[str] = set()


def _warn_left_behind(name: str, reason: str) -> None:
    if name in _warned:
        return
    _warned.add(name)
    warnings.warn(
        f"the scope object {name!r} is not carried into the worker process: {reason}. "
        f"Workers that never use it are unaffected; one that asks for it gets an error. "
        f"Define it at module level to carry it.",
        RuntimeWarning,
        stacklevel=3,
    )


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
