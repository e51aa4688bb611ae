"""The one resolver that every k* package uses where it accepts a name or an object."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from kregistry._store import current_layer

__all__ = ["resolve", "UnknownObjectError"]


class UnknownObjectError(ValueError, LookupError):
    """A name that is registered nowhere. Subclasses `ValueError` and `LookupError`.

    It can be rebuilt from its message alone (`UnknownObjectError("...")`), pickles with
    its attributes, and so keeps its type when a DataLoader worker re-raises it.

    Args:
        message: the whole message.
        name: the name that was asked for.
        kind: what sort of object was wanted (`"normalizer"`, `"hash algorithm"` ...).
        suggestions: the closest registered names, best first.

    Attributes:
        name: the name that was asked for (`None` when rebuilt from a message alone).
        kind: what sort of object was wanted.
        suggestions: the closest registered names, best first, each once, spelled as
            they resolve (`"package>name"` for registered objects).
    """

    def __init__(
        self,
        message: str,
        *,
        name: str | None = None,
        kind: str | None = None,
        suggestions: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.name = name
        self.kind = kind
        self.suggestions = list(suggestions)

    @classmethod
    def for_name(
        cls, name: str, kind: str, suggestions: Sequence[str], reason: str | None = None
    ) -> UnknownObjectError:
        """The error for `name`, with a message that lists `suggestions` or says how to
        register, and `reason` (why the name is missing) when known."""
        if reason is not None:
            hint = f": {reason}"
        elif suggestions:
            hint = f"; did you mean {', '.join(repr(s) for s in suggestions)}?"
        else:
            hint = "; register it with kregistry.register() or pass it in a CustomObjectScope"
        return cls(f"unknown {kind} {name!r}{hint}", name=name, kind=kind, suggestions=suggestions)


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


def _candidates(
    namespace: str | None, extra: tuple[Mapping[str, Any] | None, ...]
) -> dict[str, list[str]]:
    """Texts to compare a wrong name with, each mapped to the spellings that resolve."""
    spellings: dict[str, list[str]] = {}

    def offer(text: str, spelling: str) -> None:
        spellings.setdefault(text, []).append(spelling)

    for key in current_layer().objects:
        package, sep, short = key.rpartition(">")
        if namespace is not None and package == namespace:
            offer(short, short)  # resolves with the namespace added
        elif not sep:
            offer(key, key)
        elif namespace is None:
            # A registered "package>name": compared by its short name and in full, and
            # suggested in full, the spelling that resolves.
            offer(key, key)
            offer(short, key)
    for mapping in extra:
        if mapping:
            for key in mapping:
                if isinstance(key, str):
                    offer(key, key)
    return spellings


def _suggest(
    name: str, namespace: str | None, extra: tuple[Mapping[str, Any] | None, ...]
) -> list[str]:
    spellings = _candidates(namespace, extra)
    close = difflib.get_close_matches(name, list(spellings), n=10)
    suggestions: list[str] = []
    for text in close:
        for spelling in spellings[text]:
            if spelling not in suggestions:
                suggestions.append(spelling)
    return suggestions[:5]


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
        namespace: a package prefix to try, so `"sha256"` finds `"kio.hash>sha256"`.
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
            reason = _unavailable_reason(identifier, namespace)
            suggestions = [] if reason else _suggest(identifier, namespace, extra)
            raise UnknownObjectError.for_name(identifier, kind, suggestions, reason)
        if callable_only and not callable(obj):
            raise TypeError(f"the {kind} registered as {identifier!r} is not callable: {obj!r}")
        return obj
    if callable_only and not callable(identifier):
        raise TypeError(
            f"{kind} must be a registered name or a callable, got {identifier!r} "
            f"({type(identifier).__name__})"
        )
    return identifier


def _unavailable_reason(name: str, namespace: str | None) -> str | None:
    """Why `name` is missing in a process that received a scope, if it was left behind."""
    unavailable = current_layer().unavailable
    if not unavailable:
        return None
    for key in (name, f"{namespace}>{name}" if namespace else None):
        if key is not None and key in unavailable:
            return (
                f"the scope of the process that started this one held {key!r}, but it "
                f"could not be pickled and was left behind ({unavailable[key]}); define "
                f"it at module level so that it pickles"
            )
    return None
