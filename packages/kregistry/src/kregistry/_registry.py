"""Registering objects under ``"package>name"`` and finding them again."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from kregistry._store import CustomObjects, current_layer

__all__ = [
    "get_custom_objects",
    "register",
    "get_registered_name",
    "get_registered_object",
]

T = TypeVar("T")

_log = logging.getLogger("kregistry")

_VIEW = CustomObjects()


def get_custom_objects() -> CustomObjects:
    """Return the live mapping of custom objects (name -> object).

    Changes made through it are seen by every later lookup in the same context. Inside a
    `CustomObjectScope` the mapping also holds the scope's objects, and whatever is
    added, replaced or removed through it is undone when the scope ends.

    Examples:
        >>> class MyLayer:
        ...     pass
        >>> get_custom_objects()["MyLayer"] = MyLayer
        >>> get_registered_object("MyLayer") is MyLayer
        True
        >>> del get_custom_objects()["MyLayer"]
    """
    return _VIEW


def _check_name(value: object, argument: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be a str, got {value!r} ({type(value).__name__})")
    if not value or ">" in value:
        raise ValueError(f"{argument} must be a non-empty str without '>', got {value!r}")
    return value


def register(
    package: str = "Custom",
    name: str | None = None,
    *,
    replace: bool = False,
) -> Callable[[T], T]:
    """Decorator that files an object in the registry as ``"package>name"``.

    The arguments come in the order of Keras's `register_keras_serializable(package,
    name)`, so `@register("my_pkg")` files under the package `my_pkg` here as there.
    Unlike Keras 3 (and like Keras 2.4 to 2.15), a different object under a name that is
    already taken is an error unless `replace=True`.

    Args:
        package: the prefix that keeps names of different libraries apart.
        name: the name to file it under; defaults to the object's `__name__`.
        replace: allow filing a *different* object under a name already taken.
            Registering the same object again is always allowed.

    Returns:
        The decorator; it returns the object unchanged.

    Raises:
        TypeError: `package` or `name` is not a str, or the object has no
            `__name__` and no `name` was given, or it is not callable.
        ValueError: the name is taken by another object and `replace` is false.

    Examples:
        >>> @register(package="my_lib")
        ... def swish(x):
        ...     return x / (1 + 2.718281828 ** -x)
        >>> get_registered_name(swish)
        'my_lib>swish'
        >>> get_registered_object("my_lib>swish") is swish
        True
        >>> del get_custom_objects()["my_lib>swish"]
    """
    _check_name(package, "package")
    if name is not None:
        _check_name(name, "name")

    def decorator(obj: T) -> T:
        if not callable(obj):
            raise TypeError(
                f"register() needs a class or a callable, got {obj!r} ({type(obj).__name__})"
            )
        short = name if name is not None else getattr(obj, "__name__", None)
        if not isinstance(short, str):
            raise TypeError(f"{obj!r} has no __name__; pass register(name=...)")
        key = f"{package}>{short}"
        layer = current_layer()
        taken = layer.objects.get(key, _MISSING)
        if taken is not _MISSING and taken is not obj and not replace:
            raise ValueError(
                f"the name {key!r} is already registered to {taken!r}; "
                f"pass replace=True to file {obj!r} under it instead"
            )
        names = layer.writable_names()
        if taken is not _MISSING and names.get(id(taken)) == key:
            del names[id(taken)]
        layer.objects[key] = obj
        names[id(obj)] = key
        _log.debug(
            "registered %r as %r%s", obj, key, " (replacing)" if taken is not _MISSING else ""
        )
        return obj

    return decorator


_MISSING = object()


def get_registered_name(obj: Any) -> str:
    """Return the name ``obj`` was registered under, else its ``__name__``.

    Examples:
        >>> get_registered_name(len)
        'len'
    """
    key = current_layer().names.get(id(obj))
    if key is not None and current_layer().objects.get(key) is obj:
        return key
    return getattr(obj, "__name__", type(obj).__name__)


def get_registered_object(
    name: str,
    custom_objects: Mapping[str, Any] | None = None,
    module_objects: Mapping[str, Any] | None = None,
) -> Any:
    """Return the object filed under ``name``, or ``None`` when there is none.

    Looks in the active scope and the registry first, then in ``custom_objects``,
    then in ``module_objects`` (Keras's order).

    Examples:
        >>> from kregistry import custom_object_scope
        >>> with custom_object_scope({"absolute": abs}):
        ...     get_registered_object("absolute") is abs
        True
        >>> get_registered_object("absolute") is None
        True
        >>> get_registered_object("absolute", module_objects={"absolute": abs}) is abs
        True
    """
    objects = current_layer().objects
    if name in objects:
        return objects[name]
    if custom_objects and name in custom_objects:
        return custom_objects[name]
    if module_objects and name in module_objects:
        return module_objects[name]
    return None
