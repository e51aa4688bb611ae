"""The one resolver that every k* package uses where it accepts a name or an object."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from kregistry._store import current_layer

__all__ = ["resolve", "UnknownObjectError"]


class UnknownObjectError(ValueError, LookupError):
    """A name that is registered nowhere. Subclasses ``ValueError`` and ``LookupError``.

    Attributes:
        name: the name that was asked for.
        kind: what sort of object was wanted (``"normalizer"``, ``"hash algorithm"`` ...).
        suggestions: the closest registered names, best first.
    """

    def __init__(self, name: str, kind: str, suggestions: list[str]) -> None:
        self.name = name
        self.kind = kind
        self.suggestions = suggestions
        hint = (
            f"; did you mean {', '.join(repr(s) for s in suggestions)}?"
            if suggestions
            else "; register it with kregistry.register() or pass it in a CustomObjectScope"
        )
        super().__init__(f"unknown {kind} {name!r}{hint}")


_MISSING = object()


def _lookup(name: str, namespace: str | None, extra: tuple[Mapping[str, Any] | None, ...]) -> Any:
    objects = current_layer().objects
    obj = objects.get(name, _MISSING)
    if obj is _MISSING and namespace is not None:
        obj = objects.get(f"{namespace}>{name}", _MISSING)
    if obj is _MISSING:
        for mapping in extra:
            if mapping and name in mapping:
                return mapping[name]
    return obj


def _candidates(namespace: str | None, extra: tuple[Mapping[str, Any] | None, ...]) -> list[str]:
    names: list[str] = []
    for key in current_layer().objects:
        if namespace is None:
            names.append(key)
        elif key.startswith(namespace + ">"):
            names.append(key[len(namespace) + 1 :])
        elif ">" not in key:
            names.append(key)
    for mapping in extra:
        if mapping:
            names.extend(k for k in mapping if isinstance(k, str))
    return names


def resolve(
    identifier: Any,
    *,
    kind: str = "object",
    namespace: str | None = None,
    custom_objects: Mapping[str, Any] | None = None,
    module_objects: Mapping[str, Any] | None = None,
    callable_only: bool = True,
) -> Any:
    """Turn a name into the object registered under it; pass objects through.

    A str is looked up in the active scope and the registry (as given, then as
    ``"namespace>name"`` when ``namespace`` is set), then in ``custom_objects`` and
    ``module_objects``. Anything else is returned as it is, after a callable check.

    Args:
        identifier: a registered name, or the object itself.
        kind: what is wanted, for error messages (``"normalizer"``, ``"archive format"``).
        namespace: a package prefix to try, so ``"sha256"`` finds ``"kio.hash>sha256"``.
        custom_objects: extra names to try after the registry.
        module_objects: the caller's built-ins, tried last.
        callable_only: refuse objects that are not callable.

    Raises:
        UnknownObjectError: a name found nowhere; lists the closest registered names.
        TypeError: ``identifier`` (or what a name leads to) is not callable while
            ``callable_only`` is true.

    Examples:
        >>> from kregistry import custom_object_scope
        >>> with custom_object_scope({"kdemo.norm>double": lambda x: 2 * x}):
        ...     resolve("double", kind="normalizer", namespace="kdemo.norm")(21)
        42
        >>> resolve(abs) is abs
        True
        >>> resolve("doubel", kind="normalizer", module_objects={"double": abs})
        Traceback (most recent call last):
        ...
        kregistry._resolve.UnknownObjectError: unknown normalizer 'doubel'; did you mean 'double'?
    """
    extra = (custom_objects, module_objects)
    if isinstance(identifier, str):
        obj = _lookup(identifier, namespace, extra)
        if obj is _MISSING:
            close = difflib.get_close_matches(identifier, _candidates(namespace, extra), n=5)
            raise UnknownObjectError(identifier, kind, close)
        if callable_only and not callable(obj):
            raise TypeError(f"the {kind} registered as {identifier!r} is not callable: {obj!r}")
        return obj
    if callable_only and not callable(identifier):
        raise TypeError(
            f"{kind} must be a registered name or a callable, got {identifier!r} "
            f"({type(identifier).__name__})"
        )
    return identifier
